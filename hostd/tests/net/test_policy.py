"""net.policy: the profile table, entry validation, name and address decisions, nft data."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from isorun_hostd.config import REPO_ROOT
from isorun_hostd.net.policy import (
    MAX_ENTRIES,
    PROFILES,
    CompiledPolicy,
    NameRule,
    PolicyError,
    canonical_name,
    load_profiles,
)
from isorun_hostd.net.spec import EgressPolicy


def compile_policy(
    profile: str = "locked-down", allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()
) -> CompiledPolicy:
    return CompiledPolicy.from_policy(EgressPolicy(profile=profile, allow=allow, deny=deny))


def nets(*texts: str) -> tuple[IPv4Network, ...]:
    return tuple(IPv4Network(t) for t in texts)


# -- names ---------------------------------------------------------------------------------


def test_locked_down_allows_nothing() -> None:
    policy = compile_policy()
    assert not policy.allows_name("example.com")
    assert not policy.allows_address("203.0.113.5")
    assert policy.allowed_cidrs == ()
    assert not policy.default_allow


def test_exact_names_ignore_case_and_trailing_dot() -> None:
    policy = compile_policy(allow=("PyPI.org.", " *.pythonhosted.org "))
    assert policy.allows_name("files.pythonhosted.org")
    for name in ("pypi.org", "PYPI.ORG", "pypi.org.", " pypi.org "):
        assert policy.rule_for_name(name) is NameRule.LISTED
    assert not policy.allows_name("www.pypi.org")
    assert not policy.allows_name("pypi.org.evil.example")
    assert not policy.allows_name("evilpypi.org")


def test_wildcard_matches_every_depth_below_but_not_the_suffix() -> None:
    policy = compile_policy(allow=("*.example.com",))
    assert policy.allows_name("a.example.com")
    assert policy.allows_name("a.b.example.com")
    assert not policy.allows_name("example.com")
    assert not policy.allows_name("badexample.com")
    assert not policy.allows_name("example.com.evil.example")


def test_idna_names_compare_in_ascii_form() -> None:
    policy = compile_policy(allow=("bücher.example", "*.Straße.example"))
    assert policy.allows_name("xn--bcher-kva.example")
    assert policy.allows_name("BÜCHER.example")
    assert policy.allows_name("a.xn--strae-oqa.example")
    assert canonical_name("bücher.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "name", ["", ".", "localhost", "a..b.com", "-a.com", "a-.com", "a b.com", "x" * 64 + ".com",
             "a\\.b.example.com", "1.2.3", "example.123", "*.example.com"],
)  # fmt: skip
def test_invalid_names_are_never_allowed(name: str) -> None:
    assert not compile_policy("unrestricted").allows_name(name)


def test_allow_beats_deny_and_deny_narrows_the_profile() -> None:
    policy = compile_policy(
        "claude-code", allow=("api.example.com",), deny=("*.example.com", "statsig.com")
    )
    assert policy.rule_for_name("api.example.com") is NameRule.LISTED
    assert not policy.allows_name("www.example.com")
    assert not policy.allows_name("statsig.com")
    assert policy.rule_for_name("api.anthropic.com") is NameRule.LISTED
    assert not policy.allows_name("example.org")


def test_unrestricted_allows_every_name_by_default() -> None:
    policy = compile_policy("unrestricted", allow=("pypi.org",), deny=("evil.example",))
    assert policy.rule_for_name("example.org") is NameRule.DEFAULT
    assert policy.rule_for_name("pypi.org") is NameRule.LISTED
    assert policy.rule_for_name("evil.example") is NameRule.DENIED
    assert policy.default_allow


@pytest.mark.parametrize(
    ("profile", "allowed", "denied"),
    [
        ("claude-code", ["api.anthropic.com", "registry.npmjs.org", "github.com",
                         "objects.githubusercontent.com", "statsig.anthropic.com", "pypi.org",
                         "index.crates.io"],
         ["api.openai.com", "huggingface.co", "githubusercontent.com"]),
        ("openai", ["api.openai.com", "pypi.org", "files.pythonhosted.org",
                    "registry.npmjs.org", "codeload.github.com"],
         ["api.anthropic.com", "huggingface.co"]),
        ("data-science", ["huggingface.co", "cdn-lfs.huggingface.co", "pypi.org",
                          "conda.anaconda.org", "my-bucket.s3.amazonaws.com",
                          "my-bucket.s3.eu-west-1.amazonaws.com", "s3.us-east-2.amazonaws.com",
                          "storage.googleapis.com", "raw.githubusercontent.com"],
         ["ec2.amazonaws.com", "registry.npmjs.org", "api.anthropic.com"]),
        ("web-dev", ["registry.npmjs.org", "cdn.jsdelivr.net", "cdnjs.cloudflare.com",
                     "fonts.googleapis.com", "fonts.gstatic.com", "github.com"],
         ["pypi.org", "api.openai.com"]),
    ],
)  # fmt: skip
def test_profiles(profile: str, allowed: list[str], denied: list[str]) -> None:
    policy = compile_policy(profile)
    assert [n for n in allowed if not policy.allows_name(n)] == []
    assert [n for n in denied if policy.allows_name(n)] == []
    assert not policy.default_allow


def test_docs_list_every_profile_name() -> None:
    """docs/network.md's table is the user's view of PROFILES; it must not fall behind."""
    docs = (REPO_ROOT / "docs" / "network.md").read_text(encoding="utf-8")
    for profile in PROFILES.values():
        assert f"`{profile.name}`" in docs
        listed = [*profile.entries.names, *(f"*.{w}" for w in profile.entries.wildcards)]
        # S3's per-region names are documented as a pattern.
        missing = [n for n in listed if f"`{n}`" not in docs and ".s3." not in f".{n}"]
        assert missing == [], f"docs/network.md lacks {profile.name}: {missing}"


# -- entry validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1/8", "host bits set: did you mean 10.0.0.0/8"),
        ("300.1.2.3", "not a valid network"),
        ("1.2.3", "not a valid network"),
        ("10.0.0.0/33", "not a valid network"),
        ("2001:db8::/32", "IPv6"),
        ("a.*.example.com", "wildcard may only lead"),
        ("*example.com", "wildcard may only lead"),
        ("*", "wildcard may only lead"),
        ("*.com", "at least two labels"),
        ("localhost", "at least two labels"),
        ("exa mple.com", "neither an IPv4 network nor a host name"),
        ("", "neither an IPv4 network nor a host name"),
    ],
)
def test_bad_entries_are_named(entry: str, message: str) -> None:
    with pytest.raises(PolicyError, match="allow entry") as info:
        compile_policy(allow=(entry,))
    assert message in str(info.value)


def test_entry_count_is_capped() -> None:
    entries = tuple(f"h{i}.example.com" for i in range(MAX_ENTRIES + 1))
    with pytest.raises(PolicyError, match=f"deny has {MAX_ENTRIES + 1} entries"):
        compile_policy(deny=entries)
    compile_policy(deny=entries[:MAX_ENTRIES])


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy("nope")
    message = str(info.value)
    assert "unknown egress profile 'nope'" in message
    assert all(name in message for name in PROFILES)


# -- addresses -----------------------------------------------------------------------------


def test_allow_and_deny_networks() -> None:
    policy = compile_policy(allow=("198.51.100.0/24", "203.0.113.7"), deny=("198.51.100.0/24",))
    assert policy.allows_address("198.51.100.200")  # allow wins over deny
    assert policy.allows_address("203.0.113.7")
    assert not policy.allows_address("203.0.113.8")
    assert policy.allowed_cidrs == nets("198.51.100.0/24", "203.0.113.7/32")


def test_unrestricted_opens_public_ipv4_only() -> None:
    policy = compile_policy("unrestricted", deny=("198.51.100.0/24",))
    assert policy.allows_address("203.0.113.5")
    assert not policy.allows_address("198.51.100.5")
    closed_samples = "10.1.2.3 172.16.0.1 192.168.1.1 100.64.0.1 169.254.169.254 127.0.0.1 0.0.0.0"
    for closed in [*closed_samples.split(), "224.0.0.251", "255.255.255.255", "10.0.0.1"]:
        assert not policy.allows_address(closed), closed
    assert not policy.allows_address("2001:db8::1")
    assert not policy.allows_address("::ffff:203.0.113.5")
    assert not policy.allows_address("not an address")
    assert policy.allowed_cidrs == ()
    assert set(nets("198.51.100.0/24", "169.254.0.0/16", "10.0.0.0/8")) <= set(policy.denied_cidrs)


def test_wide_allow_does_not_open_closed_ranges() -> None:
    policy = compile_policy(allow=("0.0.0.0/0",))
    assert policy.allows_address("203.0.113.5")
    assert policy.allows_address("8.8.8.8")
    for closed in ("10.1.2.3", "169.254.169.254", "100.64.1.1", "127.0.0.1", "224.0.0.1"):
        assert not policy.allows_address(closed), closed
        assert not any(IPv4Network(closed).subnet_of(n) for n in policy.allowed_cidrs)


def test_allow_inside_a_closed_range_opens_that_part() -> None:
    policy = compile_policy(allow=("10.1.0.0/16", "169.254.169.254"))
    assert policy.allows_address("10.1.2.3")
    assert not policy.allows_address("10.2.0.1")
    assert policy.allows_address("169.254.169.254")
    assert not policy.allows_address("169.254.169.253")
    assert policy.admits("10.1.2.3")
    assert not policy.admits("10.2.0.1")


def test_never_open_ranges_stay_closed_even_when_named() -> None:
    transit = IPv4Network("100.127.0.0/16")
    policy = CompiledPolicy.from_policy(
        EgressPolicy(allow=("127.0.0.0/8", "10.0.0.0/24", "100.127.5.0/24", "0.0.0.0/0")),
        never_open=(transit,),
    )
    for address in ("127.0.0.1", "10.0.0.1", "100.127.5.5"):
        assert not policy.allows_address(address), address
        assert not policy.admits(address), address
    assert any(transit.subnet_of(n) for n in policy.closed_cidrs)


def test_profile_networks_do_not_open_closed_ranges_and_yield_to_deny(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    path.write_text(
        json.dumps({"profiles": {"corp": {"allow": ["10.5.0.0/16", "198.51.100.0/24"]}}})
    )
    policy = CompiledPolicy.from_policy(
        EgressPolicy(profile="corp", deny=("198.51.100.128/25",)), load_profiles(path)
    )
    assert not policy.allows_address("10.5.0.1")
    assert policy.allows_address("198.51.100.1")
    assert not policy.allows_address("198.51.100.200")
    assert policy.allowed_cidrs == nets("198.51.100.0/25")


def test_admits_keeps_dns_answers_out_of_closed_ranges() -> None:
    policy = compile_policy(deny=("0.0.0.0/0",), allow=("pypi.org",))
    assert policy.admits("203.0.113.5")  # an allowed name wins over a denied network
    for rebound in ("169.254.169.254", "10.0.0.1", "192.168.0.1", "127.0.0.1", "0.0.0.0"):
        assert not policy.admits(rebound), rebound
    assert not policy.admits("2001:db8::1")
    assert not policy.allows_address("203.0.113.5")  # only the DNS answer opens it


def test_nft_data_is_collapsed_and_disjoint_where_it_matters() -> None:
    policy = compile_policy(allow=("198.51.100.0/25", "198.51.100.128/25", "10.9.0.0/16"))
    assert policy.allowed_cidrs == nets("10.9.0.0/16", "198.51.100.0/24")
    assert IPv4Network("10.9.0.0/16") not in policy.closed_cidrs
    assert not any(IPv4Network("10.9.1.0/24").subnet_of(n) for n in policy.closed_cidrs)
    assert any(IPv4Network("10.8.0.0/16").subnet_of(n) for n in policy.closed_cidrs)


# -- the profiles file ---------------------------------------------------------------------


def test_profiles_file_adds_extends_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(
        '[profiles.ml-corp]\ndescription = "ours"\nextends = ["data-science"]\n'
        'allow = ["artifacts.corp.example"]\n\n'
        '[profiles.web-dev]\nallow = ["registry.npmjs.org"]\n'
    )
    profiles = load_profiles(path)
    ml = CompiledPolicy.from_policy(EgressPolicy(profile="ml-corp"), profiles)
    assert ml.allows_name("artifacts.corp.example")
    assert ml.allows_name("huggingface.co")
    web = CompiledPolicy.from_policy(EgressPolicy(profile="web-dev"), profiles)
    assert web.allows_name("registry.npmjs.org")
    assert not web.allows_name("cdn.jsdelivr.net")
    assert load_profiles(None) is PROFILES


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.yaml", "profiles: {}", "name it *.json or *.toml"),
        ("p.json", "{", "not valid json"),
        ("p.toml", "[profiles", "not valid toml"),
        ("p.json", '{"profile": {}}', "expected {profiles:"),
        ("p.json", '{"profiles": {"x": {"allowed": []}}}', "expected {profiles:"),
        ("p.json", '{"profiles": {"Bad_Name": {}}}', "lower-case letters"),
        ("p.json", '{"profiles": {"x": {"extends": ["nope"]}}}', "extends unknown profile"),
        ("p.json", '{"profiles": {"x": {"allow": ["a.*.com"]}}}', "profile 'x' entry"),
    ],
)
def test_bad_profiles_files_are_named(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError, match="egress profiles file") as info:
        load_profiles(path)
    assert message in str(info.value)


def test_missing_profiles_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read it"):
        load_profiles(tmp_path / "missing.toml")
