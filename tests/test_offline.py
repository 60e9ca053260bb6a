"""Offline means offline in the cpu profile, even for a script that never calls `setup()`: importing the package
sets the hub's offline switches before transformers, datasets or trl read them."""

import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent("""
    import os, socket
    attempts = []
    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address}")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = lambda address, *a, **k: refuse(None, address)

    from course_utils import alignment, zoo          # imports trl, transformers, datasets; no setup() call
    from course_utils.evaluate import perplexity
    model, tok = zoo.load("gpt2")
    print("ppl", round(perplexity(model, tok, ["Veltra has a harbour."]), 2))
    from transformers import AutoTokenizer
    try:  # a hub lookup: offline mode must answer from the cache (here: fail) without opening a socket
        AutoTokenizer.from_pretrained("gpt2")
    except OSError:
        pass
    from trl import SFTConfig
    SFTConfig(output_dir="/tmp/offline-test", report_to="none", use_cpu=True)
    print("offline", os.environ.get("HF_HUB_OFFLINE"), "attempts", attempts)
    assert not attempts, attempts
""")


def test_cpu_profile_is_offline_without_setup():
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "COURSE_PROFILE"))}
    env["COURSE_PROFILE"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "offline 1 attempts []" in proc.stdout
