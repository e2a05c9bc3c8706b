"""Every choice list has one source: the config schema's enums are the code's constants."""

from pathlib import Path

import yaml

from merges.cli import build_parser
from merges.device import DEVICES
from merges.policy import REST_POLICIES
from merges.spec import FACTOR_DTYPES, GENERATION_CONFIG_SOURCES, OUTPUT_DTYPES

SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text()
)


def test_schema_enums_are_the_engines_choices():
    per_merge = SCHEMA["properties"]["merges"]["additionalProperties"]["properties"]
    defaults = SCHEMA["properties"]["merge_defaults"]["properties"]
    stats = SCHEMA["properties"]["stats"]["properties"]
    for where in (per_merge, defaults):
        assert where["dtype"]["enum"] == list(OUTPUT_DTYPES)
        assert where["factor_dtype"]["enum"] == list(FACTOR_DTYPES)
        assert where["rest_policy"]["enum"] == list(REST_POLICIES)
    assert defaults["device"]["enum"] == list(DEVICES) == stats["device"]["enum"]
    assert defaults["generation_config_from"]["enum"] == list(GENERATION_CONFIG_SOURCES)


def test_command_line_choices_are_the_engines_choices():
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    choices = {a.dest: a.choices for a in run._actions if a.choices}
    assert list(choices["dtype"]) == list(OUTPUT_DTYPES)
    assert list(choices["factor_dtype"]) == list(FACTOR_DTYPES)
    assert list(choices["rest_policy"]) == list(REST_POLICIES)
    assert list(choices["device"]) == list(DEVICES)
    assert list(choices["generation_config_from"]) == list(GENERATION_CONFIG_SOURCES)
