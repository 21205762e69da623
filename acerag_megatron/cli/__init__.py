"""The command-line programs. Each module's main(argv=None) is a console script (pyproject.toml
[project.scripts]); tools/*.py run the same mains as files."""
