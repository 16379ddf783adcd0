"""Put the current model page into the shipped Lite0 model cards (their body), leaving the rest as it was shipped.

    python scripts/refresh_model_cards.py

Each card of a registered model shipped in the package (``package_files``) is its generated header
(front matter, model details, how to use, preprocessing, provenance), then the body
``docs/efficientnet_lite0_pvu.md``, then its license section. The weights and ``config.json`` are not
touched.
"""

from __future__ import annotations

from pathlib import Path

from uncertain_repr.pretrained import get_pretrained, list_pretrained

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "efficientnet_lite0_pvu.md"


def refresh(card: Path, page: str) -> None:
    """Replace the body of ``card`` (from its second top-level heading up to ``## License``) with ``page``."""
    text = card.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    headings = [i for i, line in enumerate(lines) if line.startswith("# ")]
    if len(headings) < 2 or "\n## License\n" not in text:
        raise ValueError(f"{card}: not a card with a header, a body and a license section")
    header = "".join(lines[: headings[1]]).rstrip("\n")
    license_section = text[text.rindex("\n## License\n"):]
    card.write_text(f"{header}\n\n{page.strip()}\n{license_section}", encoding="utf-8")


def main() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for name in list_pretrained():
        folder = get_pretrained(name).package_files
        if folder is None:
            continue
        card = REPO / "uncertain_repr" / folder / "README.md"
        refresh(card, page)
        print(f"refreshed {card.relative_to(REPO)}")


if __name__ == "__main__":
    main()
