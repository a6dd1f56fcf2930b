"""Every field a tokrl config adds to its TRL parent is documented twice (docstring and help) and both agree."""

import dataclasses
import inspect

import pytest
import trl

import tokrl.trainers as trainers

TRL_CONFIGS = (trl.GRPOConfig, trl.DPOConfig, trl.SFTConfig)


def tokrl_configs():
    found = []
    for name in dir(trainers):
        obj = getattr(trainers, name)
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and issubclass(obj, TRL_CONFIGS):
            found.append(obj)
    return found


def test_all_five_methods_have_configs():
    names = {c.__name__ for c in tokrl_configs()}
    assert {"WeightedGRPOConfig", "ForkingGRPOConfig"} <= names
    assert len(names) >= 5, names


@pytest.mark.parametrize("config_cls", tokrl_configs(), ids=lambda c: c.__name__)
def test_new_fields_are_documented_in_docstring_and_help(config_cls):
    parent = next(base for base in config_cls.__mro__[1:] if base in TRL_CONFIGS)
    parent_fields = {f.name: f for f in dataclasses.fields(parent)}
    doc = inspect.getdoc(config_cls) or ""
    for field in dataclasses.fields(config_cls):
        if field.name in parent_fields and field.name not in config_cls.__dict__.get("__annotations__", {}):
            continue  # inherited unchanged from TRL
        if field.name in parent_fields and field.default == parent_fields[field.name].default:
            continue
        owner = next(c for c in config_cls.__mro__ if field.name in c.__dict__.get("__annotations__", {}))
        owner_doc = inspect.getdoc(owner) or ""
        assert f"{field.name} (" in owner_doc or f"`{field.name}`" in owner_doc, \
            f"{owner.__name__}.{field.name} is missing from the class docstring"
        assert field.metadata.get("help"), f"{owner.__name__}.{field.name} has no help string"
