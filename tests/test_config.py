import pytest

from orchestrator.config import ConfigError, load_config


def write(tmp_path, text):
    p = tmp_path / "campaign.toml"
    p.write_text(text)
    return p


def test_minimal_config_defaults(tmp_path):
    cfg = load_config(write(tmp_path, '[evaluator]\nname = "circle_packing"\n'))
    assert cfg.campaign.iterations == 30
    assert cfg.fm.provider == "embedded"
    assert cfg.selection.method == "score_child_prop"
    assert cfg.admission.policy == "keep_all_valid"


def test_seed_agent_relative_to_config(tmp_path):
    cfg = load_config(write(tmp_path, '[campaign]\nseed_agent = "seed"\n[evaluator]\nname = "x"\n'))
    assert cfg.campaign.seed_agent == (tmp_path / "seed").resolve()


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[evaluator]\nname = "x"\n[fm]\ntimeout_s = -3\n', "campaign.toml: [fm].timeout_s = -3"),
        ('[evaluator]\nname = "x"\n[fm]\ntimeot_s = 3\n', "campaign.toml: [fm].timeot_s: unknown key"),
        ('[evaluator]\nname = "x"\n[campaign]\niterations = -1\n', "[campaign].iterations = -1"),
        ('[campaign]\nname = "x"\n', "[evaluator]: required but missing"),
        ('[evaluator]\nname = "x"\n[mutation]\noperators = {diff = -1}\n', "[mutation].operators"),
        ('[evaluator]\nname = "x"\n[fm]\nprovider = "openai"\n', "needs base_url"),
        ('[evaluator]\nname = "x"\n[budget]\nmax_usd = 0\n', "[budget].max_usd = 0"),
        ('[evaluator]\nname = "x"\n[bogus]\n', "[bogus]: unknown key"),
    ],
)
def test_errors_name_file_field_and_value(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert expected in str(e.value)
    assert str(tmp_path / "campaign.toml") in str(e.value)


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[evaluator\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
