"""How ``idcscan serve`` is reached: on this machine only, or beyond it with a token.

``plan_access`` turns the serve options into the ``SecurityPolicy`` the app enforces
(``server.security``) and the addresses to print. Bound to loopback, no token is needed
unless one is given: only this machine's users reach the port, and the Host and Origin
checks keep web pages out. Bound to anything else without ``--token``, a token is generated,
as Jupyter does, and the printed addresses carry it; ``--no-token`` is the explicit way out,
with a warning. The addresses printed are the ones other people can open (this machine's
name and addresses for 0.0.0.0), never a 127.0.0.1 line that works only here.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from idcscan.errors import IdcscanError
from idcscan.server.security import MIN_TOKEN_CHARS, SecurityPolicy, generate_token, is_loopback

WILDCARDS = ("0.0.0.0", "::", "")


@dataclass
class Access:
    policy: SecurityPolicy
    #: the addresses others should use, without the token ("http://name:5000"), best first
    bases: list[str]
    warnings: list[str] = field(default_factory=list)
    generated: bool = False

    def url(self, path: str = "/", base: str | None = None) -> str:
        """``path`` on the server, with ``?token=`` when it needs one."""
        token = self.policy.token
        return (base or self.bases[0]) + path + (
            f"?token={quote(token, safe='')}" if token else "")

    @property
    def urls(self) -> list[str]:
        return [self.url("/", base) for base in self.bases]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def interface_addresses() -> list[str]:
    """The addresses of this machine's network interfaces (psutil), loopback and link-local
    ones left out: what a colleague types when the host name does not resolve for them.
    Debian and Ubuntu map the host name to 127.0.1.1 in /etc/hosts, so the name alone never
    leads to the LAN address."""
    import psutil

    found = []
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = str(entry.address).split("%")[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                found.append(text)
    return found


def machine_names() -> list[str]:
    """This machine's host name, the addresses it resolves to (without DNS: what
    /etc/hosts and the resolver's cache say) and those of its interfaces, loopback ones left
    out."""
    name = socket.gethostname()
    names = [name] if name and not is_loopback(name) else []
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    resolved = [str(info[4][0]).split("%")[0] for info in infos]
    for address in [*resolved, *interface_addresses()]:
        if not is_loopback(address) and address not in names:
            names.append(address)
    return names


def plan_access(
    host: str, port: int, token: str | None = None, no_token: bool = False,
    allowed_hosts: tuple[str, ...] | list[str] = (), tls: bool = False,
) -> Access:
    if token and no_token:
        raise IdcscanError("--token (or IDCSCAN_TOKEN) and --no-token: choose one.")
    scheme = "https" if tls else "http"
    loopback = is_loopback(host)
    wildcard = host in WILDCARDS
    warnings = []
    generated = False
    if not loopback and not token and not no_token:
        token, generated = generate_token(), True
    if token and not generated and len(token) < MIN_TOKEN_CHARS:
        warnings.append(f"The token has {len(token)} characters; one of {MIN_TOKEN_CHARS} or "
                        "more (or none given, and one is generated) is hard to guess.")
    if no_token and not loopback:
        warnings.append(
            f"--no-token on {host or 'every interface'}: anyone who can reach port {port} can "
            "list and read every slide and start maps. Use it only behind something that "
            "asks who they are (a reverse proxy with logins).")
    if not loopback and not tls:
        warnings.append(f"{'The token and the' if token else 'The'} slides cross the network "
                        "unencrypted: serve with --certfile/--keyfile, or behind a reverse "
                        "proxy with TLS.")
    names = machine_names() if wildcard else ([] if loopback else [host])
    if host == "0.0.0.0":  # IPv4 only: an IPv6 address of this machine leads nowhere
        names = [n for n in names if ":" not in n]
    policy = SecurityPolicy(allowed_hosts=(*allowed_hosts, *names), token=token or None)
    if running_as_root():
        warnings.append("Running as root: a flaw in any library the server uses would hold "
                        "the whole machine. Run idcscan as an ordinary user.")
    shown = names or [host or "127.0.0.1"]
    return Access(policy=policy, bases=[f"{scheme}://{_bracketed(n)}:{port}" for n in shown],
                  warnings=warnings, generated=generated)


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Refuse unusable TLS files before loading a model or binding a port."""
    if keyfile is not None and certfile is None:
        raise IdcscanError("--keyfile needs --certfile (the certificate it belongs to).")
    if certfile is None:
        return
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is not None and not Path(path).is_file():
            raise IdcscanError(f"{option} {path} is not a file.")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise IdcscanError(
            f"Cannot use {certfile}{f' with {keyfile}' if keyfile else ''} for TLS: "
            f"{getattr(exc, 'reason', None) or exc}. Give a PEM certificate and its key."
        ) from None

