"""Search-space parsing, validation and conversion."""

import json

import pytest

from hpo import Kind, SearchSpace, SpaceError, ultra


def test_default_space_is_ultralytics_own_with_int_keys():
    space = SearchSpace.default()
    native = ultra.native_default_space()
    assert list(space) == list(native)
    for key, bounds in native.items():
        p = space[key]
        assert (p.low, p.high) == (bounds[0], bounds[1])
        assert p.gain == (bounds[2] if len(bounds) == 3 else 1.0)
    assert space["close_mosaic"].kind is Kind.INT
    assert isinstance(space["close_mosaic"].low, int) and isinstance(space["close_mosaic"].high, int)
    assert space["lr0"].kind is Kind.FLOAT
    assert space.to_ultralytics()["momentum"] == (0.7, 0.98, 0.3)


def test_defaults_are_ultralytics_defaults():
    d = SearchSpace.default().defaults()
    assert d["lr0"] == 0.01 and d["momentum"] == 0.937 and d["close_mosaic"] == 10
    assert isinstance(d["close_mosaic"], int)


def test_explicit_specs_file_and_inline_json(tmp_path):
    spec = {
        "lr0": {"type": "logfloat", "low": 1e-5, "high": 1e-1},
        "close_mosaic": {"type": "int", "low": 0, "high": 5},
        "optimizer": {"type": "choice", "choices": ["SGD", "AdamW"]},
        "mosaic": [0.0, 1.0],
    }
    inline = SearchSpace.parse(json.dumps(spec))
    f = tmp_path / "space.yaml"
    f.write_text(
        "lr0: {type: logfloat, low: 1.0e-5, high: 0.1}\nclose_mosaic: {type: int, low: 0, high: 5}\n"
        "optimizer: {type: choice, choices: [SGD, AdamW]}\nmosaic: [0.0, 1.0]\n"
    )
    from_file = SearchSpace.parse(f)
    assert inline == from_file
    assert inline["lr0"].log and inline["lr0"].kind is Kind.FLOAT
    assert inline["optimizer"].choices == ("SGD", "AdamW")
    (tmp_path / "space.json").write_text(json.dumps(spec))
    assert SearchSpace.parse(tmp_path / "space.json") == inline
    assert SearchSpace.parse(inline.to_spec()) == inline  # round trip of the stored form


@pytest.mark.parametrize(
    "space, message",
    [
        ({"lr_0": (1e-5, 1e-2)}, "'lr_0' is not an Ultralytics train argument (did you mean 'lr0'?)"),
        ({"lr": (1e-5, 1e-2)}, "'lr' is not an Ultralytics train argument (did you mean 'lr0'?)"),
        ({"weight_decay_": (0, 1e-3)}, "(did you mean 'weight_decay'?)"),
        ({" lr0": (1e-5, 1e-2)}, "stray whitespace; write 'lr0'"),
        ({"lr0": (1e-2, 1e-5)}, "inverted bounds"),
        ({"lr0": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log-scaled but low=0.0 <= 0"),
        ({"lr0": [0.01]}, "single bound"),
        ({"lr0": 0.01}, "single bound"),
        ({"close_mosaic": (0.5, 4)}, "integer train argument but low=0.5 is fractional"),
        ({"close_mosaic": {"type": "float", "low": 0, "high": 4}}, "integer train argument; use type int"),
        ({"lr0": ("a", 1)}, "low='a' must be a finite number"),
        ({"lr0": (1e-5, 1e-2, 2.0)}, "gain=2.0 must be within [0, 1]"),
        ({"optimizer": {"type": "choice", "choices": []}}, "non-empty 'choices'"),
        ({"lr0": {"type": "beta", "low": 0, "high": 1}}, "use float, int, logfloat or choice"),
        ({"epochs": (1, 5)}, "cannot be tuned"),
        ({"lr0": (0.01, 0.01)}, "'lr0' has equal bounds low=high=0.01, nothing to search; fix it as a train arg (lr0=0.01)"),
        ({"close_mosaic": {"type": "int", "low": 3, "high": 3}}, "equal bounds low=high=3"),
        ({"lr0": (1e-5, 2.0)}, "'lr0' high=2.0 is outside [0.0, 1.0], which Ultralytics"),
        ({"mosaic": (-0.1, 1.0)}, "'mosaic' low=-0.1 is outside [0.0, 1.0]"),
        ({"scale": (0.0, 1.5)}, "'scale' high=1.5 is outside [0.0, 1.0]"),
        ({"fraction": (0.0, 0.5)}, "'fraction' low=0.0 is outside (0.0, 1.0]"),
        ({"nbs": (0, 64)}, "'nbs' low=0 is below 1, which Ultralytics"),
        ({"mixup": {"type": "choice", "choices": [0.0, 0.5, 1.5]}}, "'mixup' choice=1.5 is outside [0.0, 1.0]"),
        ({}, "is empty"),
        ("{not json", "inline JSON is invalid"),
        ("/no/such/space.yaml", "does not exist"),
    ],
)
def test_invalid_spaces_name_the_field(space, message):
    with pytest.raises(SpaceError) as e:
        SearchSpace.parse(space)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_limits_allow_ultralytics_own_bounds():
    space = SearchSpace.parse({"lr0": (0.0, 1.0), "fraction": (0.5, 1.0), "nbs": (1, 64), "degrees": (-45.0, 45.0)})
    assert (space["lr0"].low, space["lr0"].high, space["nbs"].low) == (0.0, 1.0, 1)
    assert space["degrees"].low == -45.0  # CFG_FLOAT_KEYS have no range in Ultralytics


def test_yaml_space_file_reads_exponent_numbers_as_numbers(tmp_path):
    import yaml

    text = "lr0: [1e-5, 1E-2]\nweight_decay: {type: float, low: 0, high: 5e-4}\nclose_mosaic: [0, 1e1]\n"
    assert yaml.safe_load(text)["lr0"] == ["1e-5", "1E-2"]  # PyYAML (YAML 1.1) reads strings
    f = tmp_path / "space.yaml"
    f.write_text(text)
    space = SearchSpace.parse(f)
    assert (space["lr0"].low, space["lr0"].high) == (1e-5, 1e-2)
    assert space["weight_decay"].high == 5e-4
    assert (space["close_mosaic"].kind, space["close_mosaic"].high) == (Kind.INT, 10)


def test_validate_params_types_and_bounds():
    space = SearchSpace.parse({"lr0": (1e-4, 1e-2), "close_mosaic": (0, 10)})
    assert space.validate_params({"lr0": 0.001, "close_mosaic": 3.0}) == {"lr0": 0.001, "close_mosaic": 3}
    with pytest.raises(SpaceError, match="outside the space"):
        space.validate_params({"lr0": 0.5, "close_mosaic": 3})
    with pytest.raises(SpaceError, match="missing"):
        space.validate_params({"lr0": 0.001})
