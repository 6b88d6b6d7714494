"""Make network access fail loudly during the test session (offline guarantee).

:func:`install` replaces ``socket.socket.connect`` / ``connect_ex`` /
``sendto`` and the name lookups (``socket.getaddrinfo``,
``gethostbyname``, ``gethostbyname_ex``) with versions that raise
:class:`NetworkBlocked` for any address that is not local. Allowed:

- non-IP families (``AF_UNIX`` sockets, netlink, ...);
- loopback addresses (``127.0.0.0/8``, ``::1``, ``localhost``): Jupyter
  kernels talk to nbval/papermill over ZMQ on ``tcp://127.0.0.1`` (ZMQ uses
  its own C sockets anyway, and ``jupyter_client`` only *binds* Python
  sockets to find free ports; binding is never blocked).

Host names other than ``localhost`` are refused without being resolved, so
not even a DNS query leaves the machine.

The root ``conftest.py`` installs it for the whole pytest process, and makes
notebook kernels started by the session (nbval, papermill) install it too,
through an IPython startup file in a session-only ``IPYTHONDIR``. Other child
processes (``jupyter-book build``, the subprocesses of the reliability tests)
only get proxy variables that point HTTP(S) clients (urllib, requests, pip,
``keras.utils.get_file``) at a closed local port; a raw socket in such a
child is not caught.

Introduced with issue 9 (reliability); not part of the ``llmft`` package.
"""

from __future__ import annotations

import ipaddress
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


class NetworkBlocked(RuntimeError):
    """Raised instead of opening a network connection while the guard is on.

    A ``RuntimeError`` (not an ``OSError``) on purpose: libraries that treat
    ``OSError`` as "offline, fall back quietly" would hide the attempt.
    """


_saved: dict = {}


def is_local(host) -> bool:
    """True for loopback IPs and ``localhost``; False for anything else (unresolved)."""
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard, used for bind()
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0].lower()
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(address, what):
    # Only (host, port, ...) tuples are IP addresses; AF_UNIX paths are str/bytes.
    if isinstance(address, tuple) and address and not is_local(address[0]):
        raise NetworkBlocked(f"network access is blocked in the test session: {what} {address!r}")


def install():
    """Turn the guard on (idempotent). Returns :func:`uninstall`."""
    if _saved:
        return uninstall
    cls = socket.socket
    _saved.update(
        connect=cls.connect, connect_ex=cls.connect_ex, sendto=cls.sendto,
        getaddrinfo=socket.getaddrinfo, gethostbyname=socket.gethostbyname,
        gethostbyname_ex=socket.gethostbyname_ex,
    )

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address, "connect to")
        return _saved["connect"](self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address, "connect to")
        return _saved["connect_ex"](self, address)

    def sendto(self, data, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and args:
            _check(args[-1], "send to")
        return _saved["sendto"](self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not is_local(host):
            raise NetworkBlocked(f"network access is blocked in the test session: name lookup of {host!r}")
        return _saved["getaddrinfo"](host, *args, **kwargs)

    def gethostbyname(host):
        if not is_local(host):
            raise NetworkBlocked(f"network access is blocked in the test session: name lookup of {host!r}")
        return _saved["gethostbyname"](host)

    def gethostbyname_ex(host):
        if not is_local(host):
            raise NetworkBlocked(f"network access is blocked in the test session: name lookup of {host!r}")
        return _saved["gethostbyname_ex"](host)

    cls.connect, cls.connect_ex, cls.sendto = connect, connect_ex, sendto
    socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex
    return uninstall


def uninstall():
    """Restore the original socket functions (for tests of the guard itself)."""
    if not _saved:
        return
    cls = socket.socket
    cls.connect, cls.connect_ex, cls.sendto = _saved["connect"], _saved["connect_ex"], _saved["sendto"]
    socket.getaddrinfo = _saved["getaddrinfo"]
    socket.gethostbyname = _saved["gethostbyname"]
    socket.gethostbyname_ex = _saved["gethostbyname_ex"]
    _saved.clear()


def installed() -> bool:
    return bool(_saved)


# Environment for child processes: HTTP(S) clients that honour proxy
# variables fail fast against a closed local port (9, "discard"), local
# addresses stay direct, and pip never reaches an index.
CHILD_ENV = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "ftp_proxy": "http://127.0.0.1:9",
    "all_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "no_proxy": "localhost,127.0.0.1,::1",
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "PIP_NO_INDEX": "1",
    "LLMFT_NETWORK_BLOCKED": "1",
}

# Written to IPYTHONDIR/profile_default/startup/: every IPython kernel the
# session starts runs it before the first cell and installs the same guard.
# It leaves no name behind in the notebook's namespace and prints nothing.
STARTUP_TEMPLATE = '''\
def _llmft_network_guard():
    import importlib.util
    spec = importlib.util.spec_from_file_location("llmft_network_guard", {path!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install()
    import sys
    sys.modules["llmft_network_guard"] = module
_llmft_network_guard()
del _llmft_network_guard
'''
