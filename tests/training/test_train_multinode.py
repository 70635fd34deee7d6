"""Multi-node training as the README shows it: two torchrun "nodes" on 127.0.0.1 (one gloo process each, c10d
rendezvous) end with the same weights as one torchrun with two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from s3server import free_port

TORCHRUN = Path(sys.executable).with_name("torchrun")

SETTINGS = [
    "data.kwargs.size=[64, 96]", "data.kwargs.length=16", "data.val_kwargs.size=[64, 96]", "data.val_kwargs.length=2",
    "augment.crop_size=[64, 80]", "train.batch_size=4", "train.num_workers=0", "train.log_every=1",
    "train.val_every=3", "train.max_steps=3",
]


def _train(out: Path) -> list[str]:
    args = ["-m", "clip2depth", "-q", "train", "--recipe", "synthetic", "--out", str(out)]
    for item in SETTINGS:
        args += ["--set", item]
    return args


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_two_nodes_end_with_the_weights_of_one_two_process_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    one_node, two_nodes = tmp_path / "one-node", tmp_path / "two-nodes"
    subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                    str(free_port()), *_train(one_node)], check=True, env=env, timeout=600)  # fmt: skip

    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([str(TORCHRUN), "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                               "--rdzv-endpoint", endpoint, "--rdzv-id", "multinode-test", *_train(two_nodes)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]  # fmt: skip
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs

    a = load_file(str(one_node / "last" / "model.safetensors"))
    b = load_file(str(two_nodes / "last" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert (a[name] == b[name]).all(), name
    state = json.loads((two_nodes / "last" / "resume.json").read_text())
    assert state["world_size"] == 2 and state["state"]["step"] == 3
