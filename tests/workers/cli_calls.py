"""Run several command lines' main(argv) in one process, so a test pays for importing torch,
megatron and transformers once. argv[1]: a JSON list of [module, [args...]], e.g.
["checkpoints_convert.hf_to_megatron", ["--hf-path", ...]].

Prints one `RESULT {...}` JSON line per call: the module, its exit code (0 when main returned)
and the SystemExit message, if any. Any other exception is reported as code "exception" with
its first line, and the next call starts from a clean process group, so one failing call does
not hide what the others do.
"""
import json
import sys
from importlib import import_module


def _reset_process_group():
    import torch.distributed as dist

    if dist.is_initialized():
        from acerag_megatron.parallel import destroy_parallel

        destroy_parallel(process_group=True)


def main():
    for module, args in json.loads(sys.argv[1]):
        try:
            import_module(module).main(args)
            code, message = 0, None
        except SystemExit as e:
            code, message = (1, e.code) if isinstance(e.code, str) else (e.code or 0, None)
        except Exception as e:  # noqa: BLE001 (reported to the test, which fails on it)
            code, message = "exception", f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            _reset_process_group()
        print("RESULT " + json.dumps({"module": module, "code": code, "message": message}), flush=True)


if __name__ == "__main__":
    main()
