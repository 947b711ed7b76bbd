"""``calltape completion bash``: the shell completion of the command, made
from its argparse parsers, so that it always lists the options they take."""

from __future__ import annotations

import argparse

_COMPLETION = """# calltape's bash completion (zsh: autoload bashcompinit && bashcompinit first)
_calltape() {
    local cur=${COMP_WORDS[COMP_CWORD]} opts
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "%(commands)s" -- "$cur"))
        return
    fi
    case "${COMP_WORDS[1]}" in
%(cases)s
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _calltape calltape
"""


def completion_script(parser: argparse.ArgumentParser, run: argparse.ArgumentParser) -> str:
    """The bash completion of `parser`'s subcommands and each one's options
    (`run`: the parser of ``calltape run``), read from the parsers themselves
    (``eval "$(calltape completion bash)"``)."""
    def options(p: argparse.ArgumentParser) -> str:
        return " ".join(sorted(o for a in p._actions for o in a.option_strings))

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {name: p for name, p in sub.choices.items() if name != "run"}
    parsers["run"] = run
    cases = "\n".join(f"        {name}) opts=\"{options(p)}\" ;;" for name, p in parsers.items())
    commands = " ".join([*sub.choices, "--help", "--version"])
    return _COMPLETION % {"commands": commands, "cases": cases}
