"""Hostile model files run no code and are refused in one line (exit 2) through every command
that loads a model; --trust-pickle accepts pickles, never native code; a normal .pt2 still loads.
The files are built in tests/helpers/hostile_files.py; each payload would create a marker file."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from tests.helpers import hostile_files as hostile
from tests.helpers.batch import statuses, summary_of
from tests.helpers.cli import assert_refused, invoke, run_cli
from tests.helpers.configs import CNN_CONFIG, STATE_DICT_CONFIG, write_config
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import SAMPLES

TRUST = "--trust-pickle"
# (how the file is made, what the one line must say)
PROGRAMS = {
    "use_pickle_weight": ["weight 'linear.weight' (use_pickle", TRUST],
    "use_pickle_constant": ["constant '", "(use_pickle", TRUST],
    "opaque_constant": ["constant 'evil' (an opaque object", TRUST],
    "custom_obj_constant": ["constant 'evil' (a torchbind custom object", TRUST],
    "sample_inputs": ["example inputs", "safe unpickler (it names io.open)", TRUST],
    "legacy_member": ["data/constants/model.pt", "pre-2.8", TRUST],
    "legacy_format": ["pre-2.8 format", TRUST],
    "aoti_member": ["data/aotinductor/model/model.so", "native code", f"not even with {TRUST}"],
    "zip_bomb": ["declares 50.0 MB uncompressed", "zip bomb"],
    "many_members": ["members, more than the 20,000 allowed", "zip bomb"],
    "dotdot_name": ["'tiny/../evil'", "'..'"],
    "absolute_name": ["'/tiny/evil'", "absolute path"],
    "duplicate_name": ["two members named 'tiny/data/weights/weight_0'"],
    "sympy_expression": ["expr_str", "calls open", TRUST],
    "guards_code": ["guards_code", "calls open", TRUST],
    "forward_arg_name": ["forward_arg_names", "is not a Python identifier", TRUST],
    "node_target": ["calls 'torch.ops.load_library.__func__', which is not an operator", TRUST],
}
# The ones whose payload torch.export.load (and a call) really runs, without compress's checks.
RUN_BY_TORCH = [
    "use_pickle_weight",
    "use_pickle_constant",
    "opaque_constant",
    "sample_inputs",
    "legacy_member",
    "legacy_format",
    "sympy_expression",
    "guards_code",
]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return hostile.saved_program(tmp_path_factory.mktemp("program"))


def hostile_program(program, folder, kind: str):
    """(the crafted .pt2, the marker its payload would create)."""
    marker = folder / "pwned"
    path = hostile.rewrite(program, folder / f"{kind}.pt2", getattr(hostile, kind), marker)
    return path, marker


@pytest.mark.parametrize("kind", RUN_BY_TORCH)
def test_torch_alone_runs_the_payload(program, tmp_path, kind):
    """What the refusals below prevent: each of these files runs code in torch 2.13."""
    path, marker = hostile_program(program, tmp_path, kind)
    with contextlib.suppress(Exception):  # the payload's result is no tensor: torch may fail
        torch.export.load(str(path)).module()(torch.zeros(2, 1, 8, 8))
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_run_refuses_a_hostile_program_without_running_it(program, tmp_path, cnn_config, kind):
    path, marker = hostile_program(program, tmp_path, kind)
    out = tmp_path / "out"
    assert_refused(run_cli(path, cnn_config, out), out, f"{path}: ", *PROGRAMS[kind])
    assert not marker.exists()


def test_init_refuses_a_hostile_program(program, tmp_path):
    path, marker = hostile_program(program, tmp_path, "sympy_expression")
    starter = tmp_path / "starter.yaml"
    assert_refused(invoke("init", path, "-o", starter), tmp_path / "out", "expr_str", TRUST)
    assert not marker.exists() and not starter.exists()


def test_bench_refuses_a_zip_bomb_before_looking_inside(program, tmp_path):
    path, _ = hostile_program(program, tmp_path, "zip_bomb")
    assert_refused(invoke("bench", path), tmp_path / "out", "zip bomb")


def test_a_distillation_teacher_is_checked_like_the_model(program, tmp_path):
    path, marker = hostile_program(program, tmp_path, "use_pickle_weight")
    text = CNN_CONFIG.replace(
        "  eval:", "  train: {path: digits_train.npz, inputs: [x], labels: y, limit: 64}\n  eval:"
    ).replace("quantize.static\n    per_channel: true", f"distill\n    teacher: {path.name}")
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    assert_refused(run_cli(SAMPLES / "digits_cnn.pt2", config, out), out, "'linear.weight'", TRUST)
    assert not marker.exists()


def test_batch_reports_hostile_programs_as_failed(program, tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    models.mkdir()
    markers = [hostile_program(program, models, k)[1] for k in ("guards_code", "sample_inputs")]
    config = write_config(tmp_path, CNN_CONFIG)

    result = invoke("batch", models, "-c", config, "-o", out, "-j", "2")

    assert result.exit_code == 1, result.stderr
    found = statuses(summary_of(out))
    assert sorted(found) == ["guards_code.pt2", "sample_inputs.pt2"]
    for status, reason in found.values():
        assert status == "failed" and TRUST in reason, reason
    assert not any(marker.exists() for marker in markers)


@pytest.mark.parametrize("kind", ["saved as torch.export.save wrote it", "pickled weight"])
def test_a_normal_program_loads_and_trust_pickle_accepts_a_pickled_one(program, tmp_path, kind):
    path = program
    extra = ()
    if kind == "pickled weight":
        path, _ = hostile_program(program, tmp_path, "harmless_use_pickle_weight")
        out = tmp_path / "refused"
        assert_refused(run_cli(path, write_config(tmp_path, CNN_CONFIG), out), out, TRUST)
        extra = (TRUST,)
    config = write_config(tmp_path, CNN_CONFIG)
    result = run_cli(path, config, tmp_path / "out", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["stages"][0]["metric"]["value"] >= 0


@pytest.mark.parametrize("kind", ["aoti_member", "legacy_format_with_native_code"])
def test_trust_pickle_does_not_accept_native_code(program, tmp_path, cnn_config, kind):
    path, _ = hostile_program(program, tmp_path, kind)
    out = tmp_path / "out"
    assert_refused(run_cli(path, cnn_config, out, TRUST), out, "native code", "not even with")


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("two_argument_names", "missing a required argument: 'y'"),
        ("weight_larger_than_its_data", "sizes [1000, 1000]"),
    ],
)
def test_a_corrupt_program_is_refused_in_one_line(program, tmp_path, cnn_config, kind, needle):
    path, _ = hostile_program(program, tmp_path, kind)
    out = tmp_path / "out"
    assert_refused(run_cli(path, cnn_config, out), out, "cannot load the torch.export", needle)


ONNX = {
    "huge_initializer": ["tensor 1.weight declares 4,398,046,511,104 bytes", "more than"],
    "short_raw_data": ["tensor 1.weight declares 2,560 bytes", "holds 4 bytes of raw data"],
    "external_fifo": ["tensor 1.weight", "'weights.bin' is not a regular file"],
    "external_too_short": ["tensor 1.weight", "'weights.bin' has 10 bytes for it"],
    "huge_sparse_initializer": ["tensor sparse (made dense) declares", "more than"],
    "huge_constant": ["tensor big_constant declares 4,398,046,511,104 bytes", "more than"],
}


@pytest.mark.parametrize("kind", sorted(ONNX))
def test_onnx_tensors_are_sized_before_they_are_allocated(tmp_path, cnn_config, kind):
    source = small_onnx(tmp_path / "source.onnx")
    model = hostile.onnx_variant(source, tmp_path / f"{kind}.onnx", getattr(hostile, kind))
    out = tmp_path / "out"
    assert_refused(run_cli(model, cnn_config, out), out, f"{model}: ", *ONNX[kind])


def test_bench_sizes_onnx_tensors_too(tmp_path):
    source = small_onnx(tmp_path / "source.onnx")
    model = hostile.onnx_variant(source, tmp_path / "huge.onnx", hostile.huge_initializer)
    assert_refused(invoke("bench", model), tmp_path / "out", "tensor 1.weight declares")


def test_an_arch_that_returns_no_module_is_refused(tmp_path):
    config = write_config(tmp_path, STATE_DICT_CONFIG.replace("DigitsCNN", "make"))
    (tmp_path / "arch.py").write_text("def make():\n    return {'weights': 1}\n")
    out = tmp_path / "out"
    result = run_cli(SAMPLES / "digits_cnn_state.pt", config, out)
    assert_refused(result, out, "model.arch: arch.py:make", "returned a dict, not a torch.nn")


def test_a_state_dict_whose_tensors_do_not_load_is_refused(tmp_path):
    state = torch.load(SAMPLES / "digits_cnn_state.pt", weights_only=True)
    first = next(iter(state))
    state[first] = state[first].to_sparse()  # right key and shape, wrong kind of tensor
    torch.save(state, tmp_path / "sparse.pt")
    config = write_config(tmp_path, STATE_DICT_CONFIG)
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    out = tmp_path / "out"
    result = run_cli(tmp_path / "sparse.pt", config, out)
    assert_refused(result, out, "cannot load its tensors", f'"{first}"', "sparse")


def test_a_torchscript_archive_without_forward_is_refused(tmp_path):
    class OtherMethodOnly(torch.nn.Module):
        @torch.jit.export
        def other(self, x):
            return x

    path = tmp_path / "other.ts"
    torch.jit.save(torch.jit.script(OtherMethodOnly()), path)
    assert_refused(invoke("init", path), tmp_path / "out", "no forward method")
