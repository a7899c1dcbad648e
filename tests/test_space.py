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


@pytest.mark.parametrize(
    "choices, message",
    [
        (
            {"optimizer": ["SGD", "Lion9000"]},
            "space: 'optimizer' choice \"Lion9000\" is not a value Ultralytics "
            + ultra.version()
            + " accepts for optimizer (Adam, Adamax, AdamW, auto, MuSGD, NAdam, RAdam, RMSprop, SGD; any case)",
        ),
        ({"cos_lr": [True, "x", 1, None]}, "space: 'cos_lr' choice \"x\" is a str; 'cos_lr' takes true or false only"),
        ({"cos_lr": [True, 1]}, "space: 'cos_lr' choice 1 is an int; 'cos_lr' takes true or false only"),
        (
            {"cos_lr": [True, None]},
            "space: 'cos_lr' choice null is refused by Ultralytics (its check_cfg: 'cos_lr' must not be None)",
        ),
        ({"close_mosaic": [1, 2.5]}, "space: 'close_mosaic' choice 2.5 is not a whole number; 'close_mosaic' takes integers"),
        ({"lr0": [0.01, "x"]}, "space: 'lr0' choice \"x\" is a str; 'lr0' takes numbers"),
        ({"lr0": [0.01, True]}, "space: 'lr0' choice true is a bool"),
        ({"batch": [16, 0]}, "space: 'batch' choice 0 is not a batch: give whole sizes >= 1, -1 (AutoBatch) or a fraction"),
        ({"batch": [16, 16.5]}, "space: 'batch' choice 16.5 is not a batch"),
        ({"imgsz": [32, 0]}, "space: 'imgsz' choice 0 is not an image size"),
        ({"copy_paste_mode": ["flip", "paste"]}, 'choice "paste" is not a value Ultralytics'),
        ({"auto_augment": ["augmix", "foo"]}, "accepts for auto_augment (augmix, autoaugment, randaugment, or null: off)"),
        ({"optimizer": ["SGD", 3]}, "space: 'optimizer' choice 3 is an int; 'optimizer' takes text"),
        ({"batch": [16, 16.0]}, "repeat a value"),  # 16.0 is batch 16
    ],
)
def test_choice_values_are_checked_as_ultralytics_checks_the_arg(choices, message):
    ((key, values),) = choices.items()
    with pytest.raises(SpaceError) as e:
        SearchSpace.parse({key: {"type": "choice", "choices": values}})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_choices_ultralytics_accepts_are_kept_typed():
    space = SearchSpace.parse(
        {
            "optimizer": {"type": "choice", "choices": ["adamw", "SGD", "auto", "MuSGD"]},  # any case, as build_optimizer
            "batch": {"type": "choice", "choices": [-1, 0.5, 16, 32.0]},  # AutoBatch and a GPU-memory fraction too
            "close_mosaic": {"type": "choice", "choices": [0, 5.0]},
            "auto_augment": {"type": "choice", "choices": ["randaugment", None]},
            "cos_lr": {"type": "choice", "choices": [True, False]},
            "cache": {"type": "choice", "choices": [False, "ram", "disk"]},
        }
    )
    assert space["batch"].choices == (-1, 0.5, 16, 32) and isinstance(space["batch"].choices[3], int)
    assert space["close_mosaic"].choices == (0, 5) and isinstance(space["close_mosaic"].choices[1], int)
    assert space["optimizer"].choices == ("adamw", "SGD", "auto", "MuSGD")


def test_batch_and_imgsz_ranges_are_integers_and_autobatch_is_no_bound():
    space = SearchSpace.parse({"batch": [8, 64], "imgsz": (32.0, 64.0)})
    for key in ("batch", "imgsz"):
        assert space[key].kind is Kind.INT and isinstance(space[key].low, int), key
    assert space.defaults() == {"batch": 16, "imgsz": 64} and isinstance(space.defaults()["batch"], int)
    assert space.validate_params({"batch": 16.0, "imgsz": 48}) == {"batch": 16, "imgsz": 48}
    assert space.to_optuna()["batch"].__class__.__name__ == "IntDistribution"
    for bad in ([-1, 16], [0.5, 16], [0, 16], {"type": "float", "low": 0.2, "high": 0.9}):
        with pytest.raises(SpaceError) as e:
            SearchSpace.parse({"batch": bad})
        text = str(e.value)
        if isinstance(bad, dict):
            assert "'batch' is an integer train argument; use type int" in text
        else:
            assert text.startswith(
                f"space: 'batch' low={bad[0]}: values below 1 are not batch sizes: -1 is Ultralytics' AutoBatch"
            )
            assert '({"type": "choice", "choices": [-1, 16, 32]})' in text and "(batch=-1)" in text
    with pytest.raises(SpaceError, match="'batch' is an integer train argument but high=16.5 is fractional"):
        SearchSpace.parse({"batch": [8, 16.5]})
    with pytest.raises(SpaceError, match=r"'imgsz' bounds \(0, 64\) must be whole numbers of pixels > 0"):
        SearchSpace.parse({"imgsz": [0, 64]})


@pytest.mark.parametrize(
    "space, message",
    [
        ({"cos_lr": [0, 1]}, "space: 'cos_lr' takes true or false, not a range; tune it as a choice"),
        ({"val": {"type": "int", "low": 0, "high": 1}}, "'val' takes true or false, not a range"),
        ({"optimizer": [0, 1]}, "space: 'optimizer' takes text, not a range; tune it as a choice of its values"),
    ],
)
def test_ranges_on_true_false_or_text_args_are_refused(space, message):
    with pytest.raises(SpaceError, match=message.replace("(", r"\(")):
        SearchSpace.parse(space)


def test_a_repeated_key_in_a_space_is_refused_naming_it(tmp_path):
    with pytest.raises(SpaceError, match=r"^space: inline JSON repeats the key 'lr0'; the last value would silently"):
        SearchSpace.parse('{"lr0": [0.001, 0.01], "lr0": [0.01, 0.1]}')
    with pytest.raises(SpaceError, match="inline JSON repeats the key 'low'"):
        SearchSpace.parse('{"lr0": {"type": "float", "low": 0.001, "low": 0.002, "high": 0.01}}')
    y = tmp_path / "space.yaml"
    y.write_text("lr0: [1e-5, 1e-2]\nmomentum: [0.7, 0.98]\nlr0: [1e-3, 1e-1]\n")
    with pytest.raises(SpaceError, match=r"space: '.*space.yaml' repeats the key 'lr0' at line 3 \(first at line 1\)"):
        SearchSpace.parse(y)
    j = tmp_path / "space.json"
    j.write_text('{"hsv_v": [0, 0.5], "hsv_v": [0, 0.9]}')
    with pytest.raises(SpaceError, match=r"space: '.*space.json' repeats the key 'hsv_v'; "):
        SearchSpace.parse(j)
    y.write_text("base: &b {type: float, low: 0.0, high: 0.5}\n")  # a merge may override: YAML means it
    from hpo.space import load_yaml

    assert load_yaml("a: &a {low: 0, high: 1}\nb: {<<: *a, high: 2}\n")["b"] == {"low": 0, "high": 2}


def test_args_that_cannot_be_tuned_say_what_sets_them():
    import typer

    from hpo.cli import app
    from hpo.space import NOT_TUNABLE

    tune = next(c for c in typer.main.get_command(app).commands.values() if c.name == "tune")
    options = {o for p in tune.params for o in p.opts}
    for key, fix in NOT_TUNABLE.items():
        with pytest.raises(SpaceError) as e:
            SearchSpace.parse({key: [0, 1]})
        assert str(e.value) == f"space: '{key}' cannot be tuned, it is a setting of the study: {fix}"
        for word in fix.split():  # every --flag a fix names is a real hpo tune option
            if word.startswith("--"):
                assert word in options, (key, word)
    assert "device=0" in NOT_TUNABLE["device"] and "--device" not in NOT_TUNABLE["device"]
