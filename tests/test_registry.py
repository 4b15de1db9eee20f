"""analysis.registry.Registry, the one registry helper, and the unlearning methods registered with it."""

from __future__ import annotations

import pytest

from analysis.errors import AnalysisInputError
from analysis.registry import Registry


def make() -> Registry[object]:
    reg: Registry[object] = Registry("widget")

    @reg.register("b", label="the B widget")
    class B:
        pass

    @reg.register()
    class A:
        name = "a"
        label = "A (from the class)"

    @reg.register("c")
    def c() -> int:
        return 3

    reg.add("d", 4)
    return reg


def test_register_and_get():
    reg = make()
    assert reg.get("b").__name__ == "B" and reg.get("a").__name__ == "A"
    assert reg.get("c")() == 3 and reg.get("d") == 4
    assert reg.check("c") == "c"
    assert "a" in reg and "z" not in reg and len(reg) == 4
    assert [name for name, _ in reg.items()] == ["b", "a", "c", "d"]


def test_names_keep_registration_order():
    reg = make()
    assert reg.names() == ("b", "a", "c", "d")
    assert list(reg) == ["b", "a", "c", "d"]


def test_labels():
    reg = make()
    assert reg.labels() == {"b": "the B widget", "a": "A (from the class)", "c": "c", "d": "d"}
    assert reg.label("b") == "the B widget" and reg.label("unknown") == "unknown"
    labels = reg.labels()
    labels["b"] = "changed"
    assert reg.label("b") == "the B widget"  # labels() is a copy


def test_unknown_name_lists_the_choices():
    reg = make()
    with pytest.raises(AnalysisInputError, match=r"unknown widget 'zz' \(expected one of b, a, c, d\)"):
        reg.get("zz")
    with pytest.raises(AnalysisInputError, match="unknown widget"):
        reg.check("zz")
    with pytest.raises(AnalysisInputError, match="unknown widget"):
        reg.get(["not", "hashable"])  # type: ignore[arg-type]


def test_duplicate_registration_raises():
    reg = make()
    with pytest.raises(ValueError, match="widget 'b' registered twice"):
        reg.add("b", object())
    member = reg.get("d")
    assert reg.add("d", member) is member  # the same member again (a re-import) is not a conflict
    assert reg.names() == ("b", "a", "c", "d")


def test_a_member_needs_a_name():
    reg: Registry[object] = Registry("widget")
    with pytest.raises(ValueError, match="needs a name"):
        reg.register()(object)
    with pytest.raises(ValueError, match="needs a name"):
        reg.add("", 1)


# ---- the unlearning methods ----------------------------------------------------------------------------


def test_unlearning_methods_registry():
    from analysis.unlearning import UNLEARNING_METHODS, UnlearnMethod, get_method, register

    assert UNLEARNING_METHODS.names() == (
        "grad_ascent", "grad_diff", "npo", "readout_suppression", "retrain", "rmu", "simnpo")
    for name in UNLEARNING_METHODS:
        cls = UNLEARNING_METHODS.get(name)
        assert issubclass(cls, UnlearnMethod) and cls.name == name
        assert UNLEARNING_METHODS.label(name) == cls.label and cls.label not in ("", name)
        method = get_method(name)
        assert isinstance(method, cls) and method is not get_method(name)  # a fresh instance each time
    assert {n for n in UNLEARNING_METHODS if UNLEARNING_METHODS.get(n).role == "control"} == {
        "readout_suppression", "retrain"}
    with pytest.raises(AnalysisInputError, match="unknown unlearning method 'nope'.*grad_ascent"):
        get_method("nope")
    with pytest.raises(ValueError, match="'npo' registered twice"):

        @register("npo")
        class Impostor(UnlearnMethod):
            pass

    assert UNLEARNING_METHODS.get("npo").__name__ == "NPO" and UNLEARNING_METHODS.get("npo").name == "npo"


def test_the_demo_takes_roles_from_the_methods():
    from analysis.demo import DEMO_MODELS
    from analysis.unlearning import UNLEARNING_METHODS

    assert set(DEMO_MODELS) == set(UNLEARNING_METHODS)
    for name, (method, role) in DEMO_MODELS.items():
        assert method == name and role == UNLEARNING_METHODS.get(method).role
    assert DEMO_MODELS["retrain"] == ("retrain", "control") and DEMO_MODELS["npo"] == ("npo", "unlearned")
