"""timm's own model tests, run on ``nas_*`` models as a timm user would run them.

``test_timm_models.py`` runs timm's ``tests/test_models.py``, fetched from the sdist of the
installed timm (``fetched.py``; nothing of timm's is kept in this repository). This file only
chooses the models it runs on:

* The default run takes one variant per family, plus MobileViTv3's v2 flavour (``REPRESENTATIVE``);
  ``NAS_TIMM_ALL_VARIANTS=1`` takes all of them (``experiments/timm_conformance`` runs that sweep
  and records it).
* Its model lists come from ``timm.list_models``, replaced here before it is imported, so that
  every list holds ``nas_*`` models only. A ``nas_<family>_<variant>`` model is filtered as timm
  filters its counterpart (``efficientformer_l1``, ``fastvit_t8``, ``mobilevit_xxs`` for
  ``nas_mobilevitv3_xxs``, ...): where timm exempts a kind of model, the nas twin is exempt too.
  The one exemption this mirrors: EfficientFormer is in timm's ``NON_STD_FILTERS`` (its
  ``forward_features`` returns tokens, not a feature map), so it runs the non-standard config test
  and no feature-wrapper test, as timm's own EfficientFormer does.
* Two of timm's selectors are not applied. ``name_matches_cfg`` is moot (every nas model has a
  pretrained cfg of its own name). ``module=FEAT_INTER_FILTERS`` lists the timm modules that
  implement ``forward_intermediates``; every nas family does (``FamilyModel``), so the
  intermediate-feature tests run on all of them, MobileViTv3 and FMViT included.
* ``pretrained=True`` lists are empty: nas ships no weights (no network at run time), so the
  weight-loading tests have nothing to load.
* Tests that name timm's own models (``resnet18``, ``test_*`` with hub weights) are deselected.
"""
from __future__ import annotations

import fnmatch
import os

import pytest
import timm

from supernets.registry import family_names, get_family

for _family in family_names():
    get_family(_family)   # registers nas_<family>_<variant> with timm before test_models.py is collected

_timm_list_models = timm.list_models
# one variant per family, the one that exercises the most of it (FastViT's attention stage,
# MobileViTv3's v1 and v2 flavours); NAS_TIMM_ALL_VARIANTS=1: every variant
REPRESENTATIVE = ("nas_efficientformer_l1", "nas_fastvit_sa12", "nas_fmvit_t", "nas_iformer_t",
                  "nas_mobilevitv3_xxs", "nas_mobilevitv3_050")
# a nas family -> the timm model name prefix whose exemptions it shares (absent: no timm twin)
TIMM_TWIN = {"efficientformer": "efficientformer", "fastvit": "fastvit", "iformer": "iformer",
             "mobilevitv3": "mobilevit"}


def _names(name: str) -> list[str]:
    """The model's own name and its timm twin's (``nas_mobilevitv3_xxs`` -> ``mobilevit_xxs``)."""
    family = _family(name)
    twin = TIMM_TWIN.get(family)
    return [name] + ([f"{twin}_{name[len(f'nas_{family}_'):]}"] if twin else [])


def _family(name: str) -> str:
    return next(f for f in family_names() if name.startswith(f"nas_{f}_"))


def _matches(name: str, patterns) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
    return any(fnmatch.fnmatch(n, p) for n in _names(name) for p in patterns if p)


def nas_list_models(filter="", module="", pretrained=False, exclude_filters="", name_matches_cfg=False,
                    include_tags=None):
    if pretrained:
        return []
    names = _timm_list_models("nas_*")
    if os.environ.get("NAS_TIMM_ALL_VARIANTS") != "1":
        names = [n for n in names if n in REPRESENTATIVE]
    if filter:
        names = [n for n in names if _matches(n, filter)]
    return [n for n in names if not _matches(n, exclude_filters)]


timm.list_models = nas_list_models


def _model_name(item) -> str:
    callspec = getattr(item, "callspec", None)
    return str(callspec.params.get("model_name", "")) if callspec else ""


def pytest_collection_modifyitems(config, items):
    drop = [i for i in items if i.path.parent.name == "timm_suite" and not _model_name(i).startswith("nas_")]
    if drop:
        dropped = set(map(id, drop))
        items[:] = [i for i in items if id(i) not in dropped]
        config.hook.pytest_deselected(items=drop)


def pytest_collection_finish(session):
    timm.list_models = _timm_list_models   # the lists are made; nothing else sees the replacement


def pytest_configure(config):
    # timm's markers (its pyproject.toml registers them); timeout is pytest-timeout's, absent here
    for mark in ("base", "cfg", "cfg_nonstd", "forward", "backward", "torchscript", "features", "fxforward",
                 "fxbackward", "timeout"):
        config.addinivalue_line("markers", f"{mark}: timm's test_models.py marker")
