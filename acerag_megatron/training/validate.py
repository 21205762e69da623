"""Checks of a run's arguments against the launch and the two models' configs, made on every
rank before any process group or model is built (a mistake found later would stop each rank
at a different point, or leave some waiting in a collective)."""
from __future__ import annotations

from acerag_megatron.preflight import (PAIR_FIELDS, check_parallel_sizes, check_same_model, check_weight_files,
                                       check_world_size, fail, read_arch)
from acerag_megatron.training.arguments import TrainArguments
from acerag_megatron.training.metric_sinks import resolve_report_to


def validate_run(args: TrainArguments) -> None:
    """Stop with one `error:` line on a mistake in the launch, the models or their pairing."""
    resolve_report_to(args.report_to)
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    check_world_size(tp, pp, "--tensor_model_parallel_size", "--pipeline_model_parallel_size", exact=False)
    lm_flag, enc_flag = "--language_model_name_or_path", "--encoder_name_or_path"
    lm = read_arch(args.language_model_name_or_path, lm_flag)
    check_weight_files(args.language_model_name_or_path, lm_flag)
    if args.encoder_name_or_path == args.language_model_name_or_path:
        encoder = lm
    else:
        encoder = read_arch(args.encoder_name_or_path, enc_flag)
        check_weight_files(args.encoder_name_or_path, enc_flag)
    if args.encoder_num_hidden_layers > encoder.num_layers:
        fail(f"--encoder_num_hidden_layers {args.encoder_num_hidden_layers}: above the {encoder.num_layers} "
             f"layers of {enc_flag} {args.encoder_name_or_path}")
    # The encoder's states replace LM input embeddings, and both read the LM tokenizer's ids.
    check_same_model(encoder, f"{enc_flag} {args.encoder_name_or_path}", lm,
                     f"the LM {lm_flag} {args.language_model_name_or_path}", fields=PAIR_FIELDS)
    tp_flag, pp_flag = "--tensor_model_parallel_size", "--pipeline_model_parallel_size"
    check_parallel_sizes(lm, f"{lm_flag} {args.language_model_name_or_path}", tp=tp, pp=pp,
                         num_layers=lm.num_layers, tp_flag=tp_flag, pp_flag=pp_flag)
    check_parallel_sizes(encoder, f"{enc_flag} {args.encoder_name_or_path}", tp=tp, pp=pp, num_layers=None,
                         tp_flag=tp_flag, pp_flag=pp_flag)
