"""``etcdops completion bash|zsh``: a shell completion script made from the command parser itself.

Install with ``source <(etcdops completion bash)`` (bash) or ``source <(etcdops completion zsh)``
(zsh, through its bash completion emulation). It completes commands, their options (the global ones
included, before or after the command) and the values of options that have a fixed set; file
arguments fall back to the shell's file completion.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from typing import Any

from etcdops_local.cli.format import emit
from etcdops_local.cli.options import NO_OPTIONS


def command_paths(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, list[str]]]:
    """Each command path ("" for the top, then "local", "local up", ...) and the words that may follow it."""
    words: list[str] = []
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            children = list(action.choices.items())
            words += [name for name, _ in children]
        elif action.help != argparse.SUPPRESS:
            words += action.option_strings
    yield path, words
    for name, child in children:
        yield from command_paths(child, f"{path} {name}".strip())


def option_values(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Options with a fixed set of values, anywhere in the tree: option string -> its values."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.update(option_values(child))
        elif action.choices and action.option_strings:
            for option in action.option_strings:
                found[option] = [str(c) for c in action.choices]
    return found


def _case(entries: dict[str, list[str]]) -> str:
    arms = [f"        {shlex.quote(key)}) echo {shlex.quote(' '.join(words))} ;;" for key, words in entries.items()]
    return "\n".join(arms)


def bash_script(parser: argparse.ArgumentParser) -> str:
    paths = dict(command_paths(parser))
    return f"""# etcdops completion (bash); made by `etcdops completion bash`
_etcdops_next() {{
    case "$1" in
{_case(paths)}
    esac
}}
_etcdops_values() {{
    case "$1" in
{_case(option_values(parser))}
    esac
}}
_etcdops() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" path="" word candidate i
    local values
    values="$(_etcdops_values "$prev")"
    if [[ -n "$values" ]]; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
        return
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ "$word" == -* ]] && continue
        candidate="${{path:+$path }}$word"
        [[ -n "$(_etcdops_next "$candidate")" ]] && path="$candidate"
    done
    COMPREPLY=($(compgen -W "$(_etcdops_next "$path")" -- "$cur"))
}}
complete -o default -F _etcdops etcdops
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return (
        "#compdef etcdops\n# etcdops completion (zsh, through bashcompinit); made by `etcdops completion zsh`\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser)
    )


def cmd_completion(args: argparse.Namespace) -> int:
    from etcdops_local.cli.main import build_parser

    parser = build_parser()
    script = bash_script(parser) if args.shell == "bash" else zsh_script(parser)
    emit(args, {"shell": args.shell, "script": script}, lambda: script.rstrip("\n"))
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script: source <(etcdops completion bash)",
        parents=[common],
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(handler=cmd_completion, uses=NO_OPTIONS)
