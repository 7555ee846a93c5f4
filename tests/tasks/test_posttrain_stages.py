"""What the post-SFT stages share (tasks/core/posttrain.py)."""

from tasks.core.posttrain import first_and_kept, link_copy


def test_a_rolled_back_run_reports_the_evaluation_of_the_weights_it_kept():
    evals = [(0, {"m": 0.5}), (10, {"m": 0.6}), (20, {"m": 0.1})]
    assert first_and_kept({"evals": evals, "stopped": None, "rolled_back_to": None}) == ({"m": 0.5}, {"m": 0.1})
    assert first_and_kept({"evals": evals, "stopped": "fell", "rolled_back_to": 10}) == ({"m": 0.5}, {"m": 0.6})
    assert first_and_kept({"evals": [], "stopped": None, "rolled_back_to": None}) == ({}, {})


def test_a_passed_on_model_is_the_same_files(tmp_path):
    src = tmp_path / "a"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "sub" / "x.json").write_text("{}")
    link_copy(src, tmp_path / "b")
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == b"weights"
    assert (tmp_path / "b" / "sub" / "x.json").samefile(src / "sub" / "x.json")  # hard-linked, not copied
