"""Copy mermaid's browser build (ES modules) from the npm registry into book/_static/mermaid/.

sphinxcontrib-mermaid loads mermaid from a CDN by default, so the book's
diagrams stay blank offline (and in tests/test_browser.py, which never leaves
127.0.0.1). With the files this script writes and, in ``_config.yml``::

    sphinx:
      config:
        html_static_path: [book/_static]
        mermaid_use_local: mermaid/mermaid.esm.min.mjs

the book serves its own copy. Only the minified ES-module build is kept
(``mermaid.esm.min.mjs`` and the chunks it imports, about 2.8 MB; no source
maps), with mermaid's MIT licence.

Usage (needs ``npm``, i.e. Node.js)::

    python tools/vendor_mermaid.py               # version 11.12.1 into book/_static/mermaid
    python tools/vendor_mermaid.py --version 11.12.1 --dest book/_static/mermaid

Introduced with issue 11 (browser test); not part of the ``llmft`` package.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# sphinxcontrib-mermaid 2.1's default `mermaid_version`: the build it was tested with.
DEFAULT_VERSION = "11.12.1"
KEEP = re.compile(r"^package/(LICENSE|dist/mermaid\.esm\.min\.mjs|dist/chunks/mermaid\.esm\.min/[\w.-]+\.mjs)$")


def vendor(version: str = DEFAULT_VERSION, dest: Path = ROOT / "book" / "_static" / "mermaid") -> list[Path]:
    """Download ``mermaid@version`` with ``npm pack`` and copy its ES-module build to ``dest``.

    Args:
        version: an exact mermaid version, e.g. ``"11.12.1"``.
        dest: the folder to (re)write; its old content is removed.

    Returns:
        The files written, sorted.

    Example:
        >>> vendor("11.12.1", Path("book/_static/mermaid"))  # doctest: +SKIP
    """
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        raise ValueError(f"version must be an exact version like '11.12.1', got {version!r}")
    dest = Path(dest)
    if dest.resolve() in (ROOT, ROOT / "book", Path("/")):
        raise ValueError(f"dest must be a folder of its own, got {str(dest)!r}")
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed (Debian: apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", f"mermaid@{version}", "--pack-destination", tmp, "--silent"],
                       check=True, capture_output=True, text=True)
        (tarball,) = Path(tmp).glob("mermaid-*.tgz")
        if dest.exists():
            shutil.rmtree(dest)
        written = []
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                if not member.isfile() or not KEEP.match(member.name):
                    continue
                rel = member.name.removeprefix("package/").removeprefix("dist/")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                written.append(target)
    if not (dest / "mermaid.esm.min.mjs").is_file():
        raise RuntimeError(f"mermaid@{version} has no dist/mermaid.esm.min.mjs")
    (dest / "VERSION").write_text(f"mermaid {version} (npm), ES-module build; see LICENSE\n", encoding="utf-8")
    return sorted(written)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--dest", type=Path, default=ROOT / "book" / "_static" / "mermaid")
    args = parser.parse_args(argv)
    files = vendor(args.version, args.dest)
    size = sum(f.stat().st_size for f in files)
    print(f"mermaid {args.version}: {len(files)} files, {size / 1e6:.1f} MB in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
