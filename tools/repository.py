"""The repository's address, written once in _config.yml (repository.url).

    python tools/repository.py            # print it
    python tools/repository.py --write    # copy it into the Colab install cells and README.md
    python tools/repository.py --check    # exit 1 where a notebook or README.md disagrees

The launch buttons read _config.yml themselves. A notebook opened in Colab cannot read
_config.yml before rmtlib is installed, so its install cell carries the address as
text; this tool keeps that text equal to _config.yml, and tests/test_book_static.py
checks it.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
INSTALL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+?\.git")
README_URL = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+?(?=\.git\b|[\s)\"'`]|$)")


def url(root: Path = ROOT) -> str:
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def sync(write: bool, root: Path = ROOT) -> list[str]:
    """Files whose address differs from _config.yml (rewritten when `write`)."""
    target = url(root)
    differ = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        nb = json.loads(text)
        changed = False
        for cell in nb["cells"]:
            src = "".join(cell["source"])
            new = INSTALL.sub(f"git+{target}.git", src)
            if new != src:
                cell["source"] = new.splitlines(keepends=True)
                changed = True
        if changed:
            differ.append(str(path.relative_to(root)))
            if write:
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    readme = root / "README.md"
    text = readme.read_text()
    new = README_URL.sub(target, text)
    if new != text:
        differ.append("README.md")
        if write:
            readme.write_text(new)
    return differ


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write" in args or "--check" in args:
        differ = sync(write="--write" in args)
        for f in differ:
            print(("updated " if "--write" in args else "differs: ") + f)
        return 1 if differ and "--check" in args else 0
    print(url())
    return 0


if __name__ == "__main__":
    sys.exit(main())
