"""The CLI's network options: secrets read from the environment, never the command line."""

from __future__ import annotations

import argparse

import pytest
from isorun import NetworkInfo, Secret
from isorun._cli_network import describe, network_kwargs, parse_secret
from isorun.cli import _parser


def test_run_takes_the_policy_and_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    args = _parser().parse_args(
        [
            "run",
            "--deny",
            "0.0.0.0/0",
            "--allow",
            "api.openai.com",
            "--allow",
            "pypi.org",
            "--profile",
            "openai",
            "--secret",
            "OPENAI_API_KEY@https://api.openai.com/v1,base_url_env=OPENAI_BASE_URL",
            "python",
            "--",
            "python3",
            "-V",
        ]
    )
    assert network_kwargs(args) == {
        "allow": ["api.openai.com", "pypi.org"],
        "deny": ["0.0.0.0/0"],
        "profile": "openai",
        "secrets": [
            Secret(
                name="OPENAI_API_KEY",
                value="sk-from-env",
                upstream="https://api.openai.com/v1",
                base_url_env="OPENAI_BASE_URL",
            )
        ],
    }
    assert (args.image, args.command) == ("python", ["python3", "-V"])


def test_create_without_network_options_asks_for_none() -> None:
    args = _parser().parse_args(["create", "python"])
    assert network_kwargs(args) == {"allow": None, "deny": None, "profile": None, "secrets": None}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("OPENAI_API_KEY", "NAME@UPSTREAM"),
        ("@https://x.example", "NAME@UPSTREAM"),
        ("UNSET_SECRET_VAR@https://x.example", "set $UNSET_SECRET_VAR"),
        ("HOME@https://x.example,colour=red", "base_url_env=VAR, header=TEMPLATE"),
    ],
)
def test_a_bad_secret_option_says_how_to_write_it(spec: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("$", r"\$")):
        parse_secret(spec)


def test_a_header_template_may_be_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    secret = parse_secret("ANTHROPIC_API_KEY@https://api.anthropic.com,header=x-api-key: {value}")
    assert secret.header == "x-api-key: {value}"


def test_show_names_secrets_without_values() -> None:
    info = NetworkInfo.model_validate(
        {
            "profile": "openai",
            "allow": ["pypi.org"],
            "deny": [],
            "secrets": [
                {
                    "name": "OPENAI_API_KEY",
                    "upstream": "https://api.openai.com/v1",
                    "header_name": "Authorization",
                    "base_url_env": "OPENAI_BASE_URL",
                }
            ],
            "drops": {"dropped": 2, "spoofed": 0},
        }
    )
    assert describe(info).splitlines() == [
        "profile  openai",
        "allow    pypi.org",
        "deny     -",
        "secret   OPENAI_API_KEY -> https://api.openai.com/v1 [Authorization] (OPENAI_BASE_URL)",
        "refused  dropped 2, spoofed 0",
    ]


def test_network_set_needs_something_to_change() -> None:
    args = _parser().parse_args(["network", "set", "sb-1"])
    with pytest.raises(SystemExit, match="nothing to change"):
        args.handler(args)
