from __future__ import annotations

import tether


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(tether) if not name.startswith("_") and not _is_module(name)}
    public.discard("annotations")  # from `from __future__ import annotations`
    assert set(tether.__all__) - {"__version__"} == public


def _is_module(name: str) -> bool:
    return type(getattr(tether, name)).__name__ == "module"
