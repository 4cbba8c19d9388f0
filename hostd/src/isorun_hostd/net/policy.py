"""What an egress policy allows: the profile table, entry validation and the compiled policy.

An ``EgressPolicy`` (net/spec.py) names a profile and carries allow and deny lists; each entry
is an IPv4 network (``203.0.113.0/24``, ``198.51.100.7``) or a domain name (``pypi.org``,
``*.githubusercontent.com``). ``CompiledPolicy.from_policy`` checks the entries and turns
them into what the DNS proxy and the egress gateway ask (``rule_for_name``, ``allows_name``,
``admits``, ``allows_address``) and what nftables loads (``allowed_cidrs``, ``closed_cidrs``,
``denied_cidrs``, ``default_allow``). docs/network.md is the user's page for all of it.

Precedence, highest first, for names and addresses alike:

1. the sandbox's ``allow`` list      -> allowed   (so allow wins over deny)
2. the sandbox's ``deny`` list       -> denied    (so deny narrows a profile)
3. the profile's names and networks  -> allowed
4. the profile's ``default_allow``   -> allowed   (only ``unrestricted`` has it)
5. anything else                     -> denied

Some addresses stay closed whatever 1-4 say:

    NEVER_OPEN          0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4, 240.0.0.0/4 (incl. broadcast),
                        the guest's own link 10.0.0.0/24, and the ``never_open`` networks
                        hostd passes (its own addresses, the sandboxes' transit range)
    CLOSED_BY_DEFAULT   RFC 1918, CGNAT 100.64.0.0/10, link-local 169.254.0.0/16 (cloud
                        metadata), 192.0.0.0/24, 198.18.0.0/15: opened only by an allow
                        network of the sandbox that lies inside one of them, so
                        ``allow=["0.0.0.0/0"]`` is the public internet and
                        ``allow=["10.1.0.0/16"]`` opens that private network
    IPv6                always closed; there is no switch for it

The order nftables is expected to apply, per sandbox (the DNS proxy fills the admitted set
through ``Peer.admit``, only with addresses ``admits`` accepts)::

    daddr in allowed_cidrs      accept
    daddr in admitted (DNS)     accept     names the policy lists open their addresses
    daddr in closed_cidrs       drop       NEVER_OPEN and the unopened CLOSED_BY_DEFAULT
    daddr in denied_cidrs       drop       the deny list (and, again, every closed range)
    default_allow               accept
    drop

(net/nft.py's ``SlotSets(allow=allowed_cidrs, closed=closed_cidrs, deny=denied_cidrs,
everything=default_allow)``.)
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import dns.exception
import dns.name
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from isorun_hostd.net.spec import GUEST_ADDRESS, GUEST_PREFIX, EgressPolicy

# A sandbox's list past this is a configuration mistake, not a policy: the gateway and the
# DNS proxy scan the networks per connection, and nftables holds them per sandbox.
MAX_ENTRIES = 256
# A profile may be bigger (the S3 one names every region twice), still bounded.
MAX_PROFILE_ENTRIES = 1024
MAX_NAME_LENGTH = 253
PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"

# Letters, digits, hyphen; underscore too because real hostnames carry it (some CDNs do).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")

NEVER_OPEN: tuple[IPv4Network, ...] = (
    IPv4Network("0.0.0.0/8"),  # "this network": not a destination
    IPv4Network("127.0.0.0/8"),  # loopback: the host's own services
    IPv4Network("224.0.0.0/4"),  # multicast
    IPv4Network("240.0.0.0/4"),  # reserved, and 255.255.255.255 broadcast
    # The guest's link: 10.0.0.1 is the host's side, reached only at the ports hostd serves.
    IPv4Network(f"{GUEST_ADDRESS}/{GUEST_PREFIX}", strict=False),
)

CLOSED_BY_DEFAULT: tuple[IPv4Network, ...] = (
    IPv4Network("10.0.0.0/8"),  # RFC 1918: the operator's own networks
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv4Network("100.64.0.0/10"),  # CGNAT, also Tailscale and other overlays
    IPv4Network("169.254.0.0/16"),  # link-local: cloud metadata at 169.254.169.254
    IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    IPv4Network("198.18.0.0/15"),  # benchmarking, used by some appliances internally
)


class PolicyError(ValueError):
    """An egress policy or profile file that cannot be compiled; the message says which entry
    and how to fix it."""


class NameRule(enum.Enum):
    """Why a name is allowed or not. ``LISTED`` names open the addresses they resolve to
    (``Peer.admit``); ``DEFAULT`` names are allowed only because the profile allows every
    name, and their addresses are open or not by ``allows_address`` alone."""

    LISTED = "listed"
    DEFAULT = "default"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Entries:
    """A validated allow or deny list: exact names, wildcard suffixes and IPv4 networks."""

    names: frozenset[str] = frozenset()
    # "*.example.com" is stored as "example.com".
    wildcards: frozenset[str] = frozenset()
    networks: tuple[IPv4Network, ...] = ()

    def matches(self, name: str) -> bool:
        """``name`` is canonical (see ``canonical_name``). A wildcard matches at any depth
        below its suffix but not the suffix itself."""
        if name in self.names:
            return True
        dot = name.find(".")
        while dot != -1:
            if name[dot + 1 :] in self.wildcards:
                return True
            dot = name.find(".", dot + 1)
        return False


@dataclass(frozen=True, slots=True)
class Profile:
    """A named base policy. ``entries`` holds its names and networks."""

    name: str
    description: str
    entries: Entries
    default_allow: bool = False


def canonical_name(name: str) -> str | None:
    """The lower-case ASCII (IDNA 2008) form of a host name without the trailing dot, or None
    when it is not a valid host name."""
    text = name.strip().removesuffix(".").lower()
    if not text.isascii():
        try:
            text = dns.name.from_unicode(text, idna_codec=dns.name.IDNA_2008_Practical).to_text(
                omit_final_dot=True
            )
        except (dns.exception.DNSException, UnicodeError):
            return None
        text = text.lower()
    if not text or len(text) > MAX_NAME_LENGTH:
        return None
    labels = text.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return None
    if not all(_LABEL.match(label) for label in labels):
        return None
    return text


def parse_entries(entries: Iterable[str], *, what: str, limit: int = MAX_ENTRIES) -> Entries:
    """Validates ``entries`` (``what`` names the list in errors, e.g. "allow")."""
    items = list(entries)
    if len(items) > limit:
        raise PolicyError(
            f"{what} has {len(items)} entries, more than {limit}: use wider networks or "
            "wildcards (*.example.com)"
        )
    names: set[str] = set()
    wildcards: set[str] = set()
    networks: list[IPv4Network] = []
    for entry in items:
        text = entry.strip()
        network = _parse_network(text, entry, what=what)
        if network is not None:
            networks.append(network)
        elif text.startswith("*."):
            wildcards.add(_parse_name(text[2:], entry, what=what))
        else:
            names.add(_parse_name(text, entry, what=what))
    return Entries(frozenset(names), frozenset(wildcards), tuple(networks))


def _parse_network(text: str, entry: str, *, what: str) -> IPv4Network | None:
    """The IPv4 network ``text`` names, or None when it looks like a name."""
    if not (":" in text or "/" in text or text.replace(".", "").isdigit()):
        return None
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            base = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise PolicyError(
                f"{what} entry {entry!r} is not a valid network: write an IPv4 address "
                "(198.51.100.7) or network (198.51.100.0/24)"
            ) from None
        raise PolicyError(
            f"{what} entry {entry!r} has host bits set: did you mean {base}?"
        ) from None
    if not isinstance(network, IPv4Network):
        raise PolicyError(
            f"{what} entry {entry!r} is IPv6: sandboxes have no IPv6 egress, remove the entry"
        )
    return network


def _parse_name(name: str, entry: str, *, what: str) -> str:
    if "*" in name:
        raise PolicyError(
            f"{what} entry {entry!r}: a wildcard may only lead the name, as in *.example.com"
        )
    canonical = canonical_name(name)
    if canonical is None:
        raise PolicyError(
            f"{what} entry {entry!r} is neither an IPv4 network nor a host name with at least "
            "two labels (example.com, *.example.com); the profile 'unrestricted' allows every "
            "name"
        )
    return canonical


def _profile(name: str, description: str, *groups: tuple[str, ...]) -> Profile:
    entries = [entry for group in groups for entry in group]
    return Profile(
        name, description, parse_entries(entries, what=f"profile {name}", limit=MAX_PROFILE_ENTRIES)
    )


# The groups the built-in profiles are made of. Keep docs/network.md's table in step.
ANTHROPIC = ("api.anthropic.com",)
# What Anthropic's own Claude Code devcontainer firewall allows besides the API, npm and GitHub
# (.devcontainer/init-firewall.sh): feature flags and error reports. Claude Code runs without
# them; deny them per sandbox to cut them off.
CLAUDE_CODE_TELEMETRY = ("statsig.anthropic.com", "statsig.com", "sentry.io")
OPENAI = ("api.openai.com",)
NPM = ("registry.npmjs.org", "registry.yarnpkg.com")
PYPI = ("pypi.org", "files.pythonhosted.org")
# git over HTTPS, the REST API, archive and release downloads (objects.*, raw.*, release-assets.*).
GITHUB = ("github.com", "api.github.com", "codeload.github.com", "*.githubusercontent.com")
# The Hub, its LFS CDN and the Xet storage behind hf.co.
HUGGINGFACE = ("huggingface.co", "*.huggingface.co", "hf.co", "*.hf.co")
AWS_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "ca-west-1",
    "sa-east-1", "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "eu-north-1", "eu-south-1", "eu-south-2", "il-central-1", "me-central-1", "me-south-1",
    "af-south-1", "ap-east-1", "ap-south-1", "ap-south-2", "ap-northeast-1", "ap-northeast-2",
    "ap-northeast-3", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "mx-central-1",
)  # fmt: skip
# S3 path-style and virtual-hosted names, global and per region. Not *.amazonaws.com: that is
# every AWS API.
S3 = (
    "s3.amazonaws.com",
    "*.s3.amazonaws.com",
    *(f"s3.{region}.amazonaws.com" for region in AWS_REGIONS),
    *(f"*.s3.{region}.amazonaws.com" for region in AWS_REGIONS),
)
# Buckets, path- and virtual-hosted style, and the token endpoint service accounts need.
GCS = ("storage.googleapis.com", "*.storage.googleapis.com", "oauth2.googleapis.com")
CONDA = ("conda.anaconda.org", "repo.anaconda.com")
JSDELIVR = ("cdn.jsdelivr.net",)
CDNJS = ("cdnjs.cloudflare.com",)
GOOGLE_FONTS = ("fonts.googleapis.com", "fonts.gstatic.com")
CRATES_IO = ("crates.io", "index.crates.io", "static.crates.io")

PROFILES: Mapping[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "unrestricted",
            "every name and every public IPv4 address",
            Entries(),
            default_allow=True,
        ),
        Profile(
            "locked-down", "no egress; the sandbox's allow list opens what it needs", Entries()
        ),
        _profile(
            "claude-code",
            "Claude Code: the Anthropic API, its telemetry, PyPI, npm, GitHub and crates.io",
            ANTHROPIC,
            CLAUDE_CODE_TELEMETRY,
            PYPI,
            NPM,
            GITHUB,
            CRATES_IO,
        ),
        _profile("openai", "the OpenAI API, PyPI, npm and GitHub", OPENAI, PYPI, NPM, GITHUB),
        _profile(
            "data-science",
            "Hugging Face, PyPI, conda, GitHub, S3 and Google Cloud Storage",
            HUGGINGFACE,
            PYPI,
            CONDA,
            GITHUB,
            S3,
            GCS,
        ),
        _profile(
            "web-dev",
            "npm, jsDelivr, cdnjs, Google Fonts and GitHub",
            NPM,
            JSDELIVR,
            CDNJS,
            GOOGLE_FONTS,
            GITHUB,
        ),
    )
}


class _ProfileDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    extends: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    default_allow: bool = False


class _ProfilesDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, _ProfileDoc] = Field(default_factory=dict)


def load_profiles(path: Path | None) -> Mapping[str, Profile]:
    """The built-in profiles plus those in ``path`` (JSON or TOML, see docs/network.md); a
    profile there with a built-in's name replaces it. ``extends`` names built-in profiles."""
    if path is None:
        return PROFILES
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"egress profiles file {path}: cannot read it: {exc}") from exc
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        elif path.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            raise PolicyError(f"egress profiles file {path}: name it *.json or *.toml")
        doc = _ProfilesDoc.model_validate(raw)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(
            f"egress profiles file {path}: not valid {path.suffix[1:]}: {exc}"
        ) from exc
    except ValidationError as exc:
        raise PolicyError(
            f"egress profiles file {path}: expected {{profiles: {{<name>: {{description, "
            f"extends, allow, default_allow}}}}}}: {exc}"
        ) from None
    profiles = dict(PROFILES)
    for name, profile in doc.profiles.items():
        what = f"egress profiles file {path}: profile {name!r}"
        if not re.match(PROFILE_NAME_PATTERN, name):
            raise PolicyError(f"{what}: names are lower-case letters, digits and '-'")
        bases = []
        for base in profile.extends:
            if base not in PROFILES:
                raise PolicyError(
                    f"{what} extends unknown profile {base!r}; built-in profiles are "
                    f"{', '.join(PROFILES)}"
                )
            bases.append(PROFILES[base])
        own = parse_entries(profile.allow, what=what, limit=MAX_PROFILE_ENTRIES)
        profiles[name] = Profile(
            name,
            profile.description,
            Entries(
                own.names.union(*(b.entries.names for b in bases)),
                own.wildcards.union(*(b.entries.wildcards for b in bases)),
                (*own.networks, *(n for b in bases for n in b.entries.networks)),
            ),
            default_allow=profile.default_allow or any(b.default_allow for b in bases),
        )
    return profiles


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """One sandbox's egress policy, checked and ready to ask. Build it with ``from_policy``."""

    profile: Profile
    allow: Entries
    deny: Entries
    # IPv4 only, collapsed; the nftables order is in the module docstring.
    allowed_cidrs: tuple[IPv4Network, ...]
    denied_cidrs: tuple[IPv4Network, ...]
    # Addresses no DNS answer may open: NEVER_OPEN, hostd's never_open, the parts of
    # CLOSED_BY_DEFAULT the allow list does not open.
    closed_cidrs: tuple[IPv4Network, ...]

    @property
    def default_allow(self) -> bool:
        return self.profile.default_allow

    @classmethod
    def from_policy(
        cls,
        policy: EgressPolicy,
        profiles: Mapping[str, Profile] = PROFILES,
        *,
        never_open: Iterable[IPv4Network] = (),
    ) -> CompiledPolicy:
        """``never_open``: networks no entry may open, such as the host's own addresses and
        the range the sandboxes' transit addresses come from. Raises ``PolicyError``."""
        profile = profiles.get(policy.profile)
        if profile is None:
            raise PolicyError(
                f"unknown egress profile {policy.profile!r}; known profiles: "
                f"{', '.join(sorted(profiles))}"
            )
        allow = parse_entries(policy.allow, what="allow")
        deny = parse_entries(policy.deny, what="deny")
        never = (*NEVER_OPEN, *never_open)
        # A user network opens the closed ranges it lies inside; a profile network opens none.
        opened = [
            piece
            for network in allow.networks
            for piece in _subtract(
                [network], [c for c in CLOSED_BY_DEFAULT if not network.subnet_of(c)]
            )
        ]
        from_profile = _subtract(profile.entries.networks, [*CLOSED_BY_DEFAULT, *deny.networks])
        allowed = _subtract([*opened, *from_profile], never)
        closed = _collapse([*never, *_subtract(CLOSED_BY_DEFAULT, allowed)])
        return cls(
            profile=profile,
            allow=allow,
            deny=deny,
            allowed_cidrs=tuple(allowed),
            denied_cidrs=_collapse([*deny.networks, *CLOSED_BY_DEFAULT, *never]),
            closed_cidrs=tuple(closed),
        )

    def rule_for_name(self, name: str) -> NameRule:
        """Whether a DNS query, SNI or Host for ``name`` may go out, and why (see NameRule).
        Case and a trailing dot do not matter; a Unicode name is compared in its IDNA form."""
        canonical = canonical_name(name)
        if canonical is None:
            return NameRule.DENIED
        if self.allow.matches(canonical):
            return NameRule.LISTED
        if self.deny.matches(canonical):
            return NameRule.DENIED
        if self.profile.entries.matches(canonical):
            return NameRule.LISTED
        return NameRule.DEFAULT if self.profile.default_allow else NameRule.DENIED

    def allows_name(self, name: str) -> bool:
        return self.rule_for_name(name) is not NameRule.DENIED

    def allows_address(self, ip: str) -> bool:
        """Whether a connection to ``ip`` may go out without a DNS answer that opened it."""
        address = _ipv4(ip)
        if address is None:
            return False
        if _within(address, self.allowed_cidrs):
            return True
        if _within(address, self.denied_cidrs):
            return False
        return self.profile.default_allow

    def admits(self, ip: str) -> bool:
        """Whether a DNS answer for an allowed name may carry ``ip`` (and open it): any IPv4
        address outside the closed ranges. A deny network does not stop it, since an allowed
        name wins over a denied network; this is what keeps a name that resolves to
        169.254.169.254 or 10.x (DNS rebinding) from opening it."""
        address = _ipv4(ip)
        if address is None:
            return False
        return _within(address, self.allowed_cidrs) or not _within(address, self.closed_cidrs)


def _ipv4(ip: str) -> IPv4Address | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return address if isinstance(address, IPv4Address) else None


def _within(address: IPv4Address, networks: Iterable[IPv4Network]) -> bool:
    return any(address in network for network in networks)


def _collapse(networks: Iterable[IPv4Network]) -> tuple[IPv4Network, ...]:
    return tuple(ipaddress.collapse_addresses(networks))


def _subtract(
    networks: Iterable[IPv4Network], holes: Iterable[IPv4Network]
) -> tuple[IPv4Network, ...]:
    """``networks`` without the addresses in ``holes``, collapsed."""
    remaining = list(networks)
    for hole in holes:
        pieces: list[IPv4Network] = []
        for network in remaining:
            if network.subnet_of(hole):
                continue
            if hole.subnet_of(network):
                pieces.extend(network.address_exclude(hole))
            else:
                pieces.append(network)
        remaining = pieces
    return _collapse(remaining)
