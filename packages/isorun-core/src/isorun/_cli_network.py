"""The `isorun` CLI's network parts: the egress options of `run` and `create`, and
`isorun network show|set`.

```
--allow X --deny Y (repeatable) --profile P           the sandbox's egress policy
--secret NAME@UPSTREAM[,base_url_env=VAR][,header=H]  a secret whose value is read from $NAME
isorun network show ID [--json]                       policy, secret names, packets refused
isorun network set ID [--allow X]... [--deny Y]... [--profile P] [--clear-allow] [--clear-deny]
```
A secret's value is never taken from the command line, where `ps` and shell history would show
it: `--secret OPENAI_API_KEY@https://api.openai.com/v1` reads `$OPENAI_API_KEY`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from isorun._async_sandbox import AsyncSandbox
from isorun._base import Secret
from isorun._models import NetworkInfo

_SECRET_OPTIONS = ("base_url_env", "header")


def add_policy_options(parser: argparse.ArgumentParser, *, create: bool) -> None:
    """--allow, --deny, --profile (and, at create, --secret)."""
    parser.add_argument(
        "--allow",
        action="append",
        metavar="ENTRY",
        help="allow egress to a host, *.wildcard, address or CIDR (repeatable)",
    )
    parser.add_argument(
        "--deny", action="append", metavar="ENTRY", help="deny egress to one (repeatable)"
    )
    parser.add_argument(
        "--profile",
        help="base rules: locked-down (default), unrestricted, openai, claude-code, ...",
    )
    if create:
        parser.add_argument(
            "--secret",
            action="append",
            type=parse_secret,
            metavar="NAME@UPSTREAM",
            help="inject $NAME's value into requests to the https UPSTREAM; the guest sees a "
            "placeholder (repeatable; add ,base_url_env=VAR or ,header='x-api-key: {value}')",
        )


def parse_secret(spec: str) -> Secret:
    """`NAME@UPSTREAM[,base_url_env=VAR][,header=H]`, the value from `$NAME`.

    Raises:
        argparse.ArgumentTypeError: A malformed spec, or `$NAME` unset.
    """
    first, *options = spec.split(",")
    name, at, upstream = first.partition("@")
    if not at or not name or not upstream:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: write NAME@UPSTREAM, e.g. OPENAI_API_KEY@https://api.openai.com/v1"
        )
    extra: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key not in _SECRET_OPTIONS:
            raise argparse.ArgumentTypeError(
                f"{spec!r}: {option!r} is not one of base_url_env=VAR, header=TEMPLATE"
            )
        extra[key] = value
    secret = os.environ.get(name)
    if not secret:
        raise argparse.ArgumentTypeError(
            f"secret {name}: set ${name} to its value (values are never taken from the "
            "command line)"
        )
    return Secret(name=name, value=secret, upstream=upstream, **extra)


def network_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `Sandbox.create` keyword arguments the parsed options give."""
    return {
        "allow": args.allow,
        "deny": args.deny,
        "profile": args.profile,
        "secrets": args.secret,
    }


def add_commands(commands: Any) -> None:
    """network show ID [--json], network set ID [policy options]."""
    network = commands.add_parser("network", help="a sandbox's egress policy and secrets")
    network_commands = network.add_subparsers(required=True, metavar="ACTION")
    show = network_commands.add_parser(
        "show", help="the policy, the secrets (names, never values), the packets refused"
    )
    show.add_argument("sandbox_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)
    change = network_commands.add_parser(
        "set", help="change a sandbox's policy: what is given replaces, the rest stays"
    )
    change.add_argument("sandbox_id")
    add_policy_options(change, create=False)
    change.add_argument("--clear-allow", action="store_true", help="empty the allow list")
    change.add_argument("--clear-deny", action="store_true", help="empty the deny list")
    change.set_defaults(handler=_set)


def _show(args: argparse.Namespace) -> int:
    async def show() -> int:
        sandbox = await AsyncSandbox.connect(args.sandbox_id)
        try:
            info = await sandbox.network.get()
        finally:
            await sandbox.aclose()
        print(info.model_dump_json() if args.json else describe(info))
        return 0

    return asyncio.run(show())


def _set(args: argparse.Namespace) -> int:
    allow = [] if args.clear_allow else args.allow
    deny = [] if args.clear_deny else args.deny
    if allow is None and deny is None and args.profile is None:
        raise SystemExit(
            "isorun: error: nothing to change: give --allow, --deny, --profile, --clear-allow "
            "or --clear-deny"
        )

    async def change() -> int:
        sandbox = await AsyncSandbox.connect(args.sandbox_id)
        try:
            info = await sandbox.network.update(profile=args.profile, allow=allow, deny=deny)
        finally:
            await sandbox.aclose()
        print(describe(info))
        return 0

    return asyncio.run(change())


def describe(info: NetworkInfo) -> str:
    lines = [
        f"profile  {info.profile}",
        f"allow    {' '.join(info.allow) or '-'}",
        f"deny     {' '.join(info.deny) or '-'}",
    ]
    for secret in info.secrets:
        route = f" ({secret.base_url_env})" if secret.base_url_env else ""
        lines.append(f"secret   {secret.name} -> {secret.upstream} [{secret.header_name}]{route}")
    if info.drops is not None:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(info.drops.items()))
        lines.append(f"refused  {counts or '-'}")
    return "\n".join(lines)
