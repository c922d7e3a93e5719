"""Paste measured tables into README.md between its markers, so no figure there is typed by hand.

    python scripts/update_readme.py results docs/camvid-compare.md   # segcli compare's compare.md
    python scripts/update_readme.py figures docs/bench.md            # a markdown file of bench tables
    python scripts/update_readme.py gpu GPU_MARKDOWN                 # benchmarks/bench_keras_backend.py --markdown
"""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def main(section: str, source: str) -> None:
    text = README.read_text()
    body = Path(source).read_text().strip()
    pattern = re.compile(rf"(<!-- {section}:start -->\n).*?(\n<!-- {section}:end -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"README.md has no <!-- {section}:start/end --> markers")
    README.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text))


if __name__ == "__main__":
    main(*sys.argv[1:3])
