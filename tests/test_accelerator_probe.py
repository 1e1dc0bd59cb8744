"""accelerator_probe: the CPU is chosen only on a machine with accelerator plugins and no device."""
import os

from osmnet_jax.runtime import accelerator_probe as probe

PLUGINS = ["jax_plugins.xla_cuda12", "libtpu"]


def _dev(tmp_path, *nodes):
  root = tmp_path / "dev"
  root.mkdir()
  for n in nodes:
    (root / n).parent.mkdir(parents=True, exist_ok=True)
    (root / n).write_text("")
  return str(root)


def test_cpu_chosen_without_a_device(tmp_path):
  env = {}
  note = probe.apply(env, _dev(tmp_path, "null", "vfio/vfio"), PLUGINS, quiet=True)
  assert env["JAX_PLATFORMS"] == "cpu"
  assert "jax_plugins.xla_cuda12" in note and "JAX_PLATFORMS" in note


def test_devices_plugins_and_the_user_choice_leave_jax_alone(tmp_path):
  for node in ("nvidia0", "accel0", "vfio/0", "kfd"):
    sub = tmp_path / node.replace("/", "_")
    sub.mkdir()
    env = {}
    assert probe.apply(env, _dev(sub, node), PLUGINS, quiet=True) is None, node
    assert "JAX_PLATFORMS" not in env
  (tmp_path / "bare").mkdir()
  bare = _dev(tmp_path / "bare")
  env = {}
  assert probe.apply(env, bare, [], quiet=True) is None and env == {}   # no plugin: no probe noise
  env = {"JAX_PLATFORMS": "cuda"}
  assert probe.apply(env, bare, PLUGINS, quiet=True) is None and env["JAX_PLATFORMS"] == "cuda"
  env = {probe.OPT_OUT_ENV: "0"}
  assert probe.apply(env, bare, PLUGINS, quiet=True) is None and "JAX_PLATFORMS" not in env


def test_installed_plugins_tolerates_missing_parents():
  def find_spec(name):
    if name.startswith("jax_plugins."):
      raise ModuleNotFoundError(name)
    return object() if name == "libtpu" else None
  assert probe.installed_plugins(find_spec) == ["libtpu"]
  assert os.path.isdir("/dev") and isinstance(probe.device_nodes(), list)
