"""The `course` command: `doctor`, `build`, `run`, `report`.

    course doctor            check Python, pinned packages, the profile, and verify shipped data (read whole) and
                             models (sha256 from build_info.json); the GPU too with --gpu
    course build             regenerate data, tokenizer and the three tiny models (minutes per model)
    course build --smoke --out DIR   the same code path in a few steps, into a scratch folder (CI does this)
    course run [LESSON ...]  execute lessons in order; prints runtime, peak memory and pass/fail per lesson
    course report            one HTML page (runs/report.html) with every lesson's measured table and checks
    course standins DIR      write offline stand-ins of every hub checkpoint the gpu profile loads (a hub cache)
    course rehearse [LESSON ...] [--device cpu|cuda] [--hub]
                             run lessons through the gpu profile's code: on stand-ins (default) or the real hub
                             checkpoints (--hub), on the CPU or CUDA; prints time, peak memory and peak GPU memory
    course fork URL          point every Colab badge and set-up cell at a fork (https://github.com/owner/name)
    course site              the course as a static website (runs/site/site/index.html), from the stored outputs
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import metadata
from pathlib import Path

from course_utils.tools.api_contract import check_contract
from course_utils.tools.build import build_all, hash_problems
from course_utils.data import DataError, read_jsonl
from course_utils.errors import CourseError
from course_utils.paths import DATA_DIR, MODELS_DIR, RUNS_DIR
from course_utils.profiles import choose_profile, package_version, set_offline
from course_utils.tools.report import write_report
from course_utils.tools.coursemap import update_course_map
from course_utils.tools.fork import retarget
from course_utils.tools.site import broken_links, build_site
from course_utils.tools.runner import format_table, lesson_notebooks, run_lessons
from course_utils.tools.standins import rehearsal_env, write_standins
from course_utils.world import DATA_FILES
from course_utils.zoo import FAMILIES, VARIANTS, check_family, check_folder


PACKAGE = "course-utils"


def pinned_requirements() -> dict[str, str]:
    """The exact pins (`name==version`) the installed course package declares: pyproject.toml's, read back."""
    pins = {}
    for req in metadata.requires(PACKAGE) or []:
        if "extra ==" in req:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)", req)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def doctor_checks(gpu: bool = False, data_dir: Path = DATA_DIR,
                  models_dir: Path = MODELS_DIR) -> list[tuple[bool, str]]:
    """(ok, message) for each requirement of the course: versions, the profile, and every shipped file read and
    verified (a truncated data file or a changed model file is a FAIL naming it, not a surprise in lesson 5)."""

    checks = [(sys.version_info >= (3, 10), f"Python {sys.version.split()[0]} (needs >= 3.10)")]
    for name, want in pinned_requirements().items():
        have = package_version(name)
        checks.append((have == want, f"{name} {have} (pinned {want})"))

    drift = check_contract()
    checks.append((not drift, "library API contract" + (": " + "; ".join(drift) if drift else " (every call course_utils makes)")))
    torch_version = package_version("torch")
    checks.append((torch_version != "not installed", f"torch {torch_version} (tested on 2.13 CPU)"))
    checks.append(profile_check())
    checks.append(kernel_check())
    checks.append(widgets_check())
    checks += data_file_checks(data_dir)
    checks += model_folder_checks(models_dir)
    if gpu:
        import torch

        ok = torch.cuda.is_available()
        checks.append((ok, f"GPU: {torch.cuda.get_device_name(0)}" if ok else "GPU: none visible to torch"))
    return checks


def profile_check() -> tuple[bool, str]:
    """The profile `setup()` will choose: an unknown `COURSE_PROFILE` (a typo such as `banana`) is a FAIL."""
    try:
        return True, f"profile {choose_profile()} (COURSE_PROFILE={os.environ.get('COURSE_PROFILE', '')!r})"
    except CourseError as err:
        return False, f"profile: {err}"


def kernel_check() -> tuple[bool, str]:
    """The Jupyter kernel a notebook starts (`python3`) runs this Python, so it sees the course and its pins."""
    import shutil
    import subprocess

    try:
        from jupyter_client.kernelspec import KernelSpecManager

        argv = KernelSpecManager().get_kernel_spec("python3").argv
    except Exception as err:  # noqa: BLE001 - no kernelspec, or jupyter_client missing: both are the finding
        return False, f"Jupyter kernel 'python3' not found ({type(err).__name__}); install the lab extra"
    exe = shutil.which(argv[0]) or argv[0]
    try:
        theirs = subprocess.run([exe, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                                timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return False, f"Jupyter kernel 'python3' runs {exe}, which does not start ({type(err).__name__})"
    ok = Path(theirs).resolve() == Path(sys.prefix).resolve()
    return ok, (f"Jupyter kernel 'python3' runs this Python ({sys.prefix})" if ok else
                f"Jupyter kernel 'python3' runs {exe} (prefix {theirs or '?'}), not this Python ({sys.prefix}): "
                f"notebooks would not see the course; run `python -m ipykernel install --user`")


def widgets_check() -> tuple[bool, str]:
    """ipywidgets and JupyterLab's widget extension, whose versions must match (8.x with jupyterlab_widgets 3.x)."""
    widgets, lab = package_version("ipywidgets"), package_version("jupyterlab_widgets")
    ok = widgets.startswith("8.") and lab.startswith("3.")
    return ok, (f"widgets: ipywidgets {widgets} with jupyterlab_widgets {lab}" if ok else
                f"widgets: ipywidgets {widgets} and jupyterlab_widgets {lab} do not match (need 8.x and 3.x): "
                f"progress bars and controls will not render; reinstall the lab extra")


def data_file_checks(data_dir: Path = DATA_DIR) -> list[tuple[bool, str]]:
    """Each shipped data file read completely through `read_jsonl`: missing, truncated or undecodable lines FAIL
    with the file and line."""
    names = dict.fromkeys(["people.jsonl", *DATA_FILES, *sorted(p.name for p in Path(data_dir).glob("*.jsonl"))])
    checks = []
    for name in names:
        path = Path(data_dir) / name
        if not path.is_file():
            checks.append((False, f"data_samples/{name} missing: run `course build --data-only`"))
            continue
        try:
            checks.append((True, f"data_samples/{name} ({len(read_jsonl(path))} rows)"))
        except DataError as err:
            where = f"data_samples/{err}" if str(err).startswith(name) else f"data_samples/{name}: {err}"
            checks.append((False, f"{where}; regenerate it with `course build --data-only`"))
    return checks


def _folder_check(folder: Path, family: str | None) -> tuple[bool, str]:
    """One shipped model folder: its files match the sha256 hashes of build_info.json and (for a known family) the
    header of its weights agrees with its config (`zoo.check_folder`, which reads no weights)."""
    problems = hash_problems(folder)
    if not problems and family in FAMILIES:
        try:
            check_folder(folder, family)
        except CourseError as err:
            problems = [str(err)]
    return (not problems, f"shipped model {folder.name}" + (f": {'; '.join(problems)}" if problems else
                                                           " (every file matches its recorded sha256)"))


def model_folder_checks(models_dir: Path = MODELS_DIR) -> list[tuple[bool, str]]:
    """Each shipped model folder: the three families (which must be there), then the lesson bases and variants
    (`<family>_qa`, `<family>_deep`) that are."""
    checks = []
    for family in FAMILIES:
        folder = Path(models_dir) / family
        if not folder.is_dir():
            checks.append((False, f"shipped model {family} missing in {folder}: run `course build`"))
            continue
        checks.append(_folder_check(folder, family))
    for folder in sorted(p for p in Path(models_dir).glob("*_*") if p.is_dir()):
        checks.append(_folder_check(folder, folder.name.split("_", 1)[0]))
    return checks


def cmd_doctor(args) -> int:
    checks = doctor_checks(args.gpu)
    for ok, msg in checks:
        print(f"[{'OK' if ok else 'FAIL'}] {msg}")
    failed = sum(not ok for ok, _ in checks)
    print(f"{len(checks) - failed} ok, {failed} failed")
    return 1 if failed else 0


def cmd_build(args) -> int:
    set_offline(True)
    families = [check_family(f) for f in (args.family or FAMILIES)]
    build_all(families, Path(args.out) if args.out else DATA_DIR, smoke=args.smoke, data_only=args.data_only,
              resume=args.resume, variant=args.variant)
    return 0


def cmd_run(args) -> int:
    results, out_dir = run_lessons(args.lessons, write=args.write, keep_going=args.keep_going,
                                   solutions=args.solutions)
    print(format_table(results))
    print(f"executed notebooks and benchmark.json in {out_dir.resolve()}")
    if args.write:  # the course map and the workshop guide take their runtimes from this measurement only
        for path in update_course_map({r.lesson: vars(r) for r in results if r.passed}):
            print(f"updated the runtimes in {path.resolve()}")
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"FAILED: lesson {r.lesson}, {r.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_standins(args) -> int:
    out = Path(args.dir).resolve()
    for snapshot in write_standins(out):
        print(f"wrote {snapshot}")
    print(f"use them with: HF_HOME={out} HF_HUB_OFFLINE=1 COURSE_PROFILE=gpu COURSE_DEVICE=cpu")
    return 0


def cmd_rehearse(args) -> int:
    """The gpu profile's code path, lesson by lesson: claims are shown, not asserted (`COURSE_REHEARSAL=1`)."""
    if args.hub:
        environ = {"COURSE_PROFILE": "gpu", "COURSE_DEVICE": args.device, "COURSE_REHEARSAL": "1"}
    else:
        cache = Path(args.cache).resolve() if args.cache else (RUNS_DIR / "standins").resolve()
        write_standins(cache)
        environ = rehearsal_env(cache, args.device)
    environ["COURSE_SEEDS"] = args.seeds
    results, out_dir = run_lessons(args.lessons, keep_going=True, environ=environ)
    print(format_table(results))
    print(f"executed notebooks and benchmark.json in {out_dir.resolve()}")
    return 1 if any(not r.passed for r in results) else 0


def cmd_fork(args) -> int:
    changed = retarget(args.url)
    for path in changed:
        print(f"updated {path}")
    print(f"{len(changed)} files now point at {args.url}; commit them in your fork")
    return 0


def cmd_site(args) -> int:
    site = build_site(Path(args.out) if args.out else None)
    bad = broken_links(site)
    for link in bad:
        print(f"broken link: {link}", file=sys.stderr)
    print(f"wrote {site / 'index.html'} (open it in a browser, or serve it: python -m http.server -d {site})")
    return 1 if bad else 0


def cmd_report(args) -> int:
    out = write_report(Path(args.out) if args.out else None)
    print(f"wrote {out.resolve()} (open it in a browser)")
    return 0


EXAMPLES = """examples:
  course doctor                      is everything installed and intact?
  course run                         run the whole course (about ten minutes on 2 cores)
  course run 05                      one lesson, by number ...
  course run overfitting noise       ... or by topic word, file name or path
  course report                      one HTML page with every lesson's findings
  course rehearse 08                 lesson 08 through the gpu profile's code, on stand-in models
"""
RUN_EXAMPLES = """examples:
  course run                                  every lesson, in order
  course run 5                                lesson 05
  course run overfitting                      a topic word
  course run notebooks/05_overfitting.ipynb   a path, as tab completion gives it
  course run 01 02 --write                    store the fresh outputs in the committed notebooks
"""


def lesson_list() -> str:
    """The lessons, one per line, for `--help`."""
    return "\nlessons:\n" + "".join(f"  {p.stem}\n" for p in lesson_notebooks())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course", description="The fine-tuning course's command.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES + lesson_list())
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check the installation")
    d.add_argument("--gpu", action="store_true", help="also require a CUDA GPU")
    d.set_defaults(func=cmd_doctor)
    b = sub.add_parser("build", help="regenerate data, tokenizer and the tiny models")
    b.add_argument("--family", action="append", help="only this family (repeatable): gpt2, qwen2, llama")
    b.add_argument("--smoke", action="store_true", help="a few steps only, into --out (CI's check of the builder)")
    b.add_argument("--data-only", action="store_true", help="only the data_samples/*.jsonl files")
    b.add_argument("--out", help="output folder (default: data_samples/)")
    b.add_argument("--resume", action="store_true", help="continue saved models with the stages they have not done")
    b.add_argument("--variant", choices=sorted(VARIANTS), help="a variant size instead of the base models "
                   "(deep: 8 blocks, for lesson 04's layer analysis)")
    b.set_defaults(func=cmd_build)
    r = sub.add_parser("run", help="execute lessons in order and measure them",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_EXAMPLES + lesson_list())
    r.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    r.add_argument("--write", action="store_true", help="store the fresh outputs in the committed notebooks")
    r.add_argument("--keep-going", action="store_true", help="run the remaining lessons after a failure")
    r.add_argument("--solutions", action="store_true", help="run each lesson's solutions notebook after it "
                   "(stored too, with --write)")
    r.set_defaults(func=cmd_run)
    st = sub.add_parser("standins", help="write offline stand-ins of the gpu profile's hub checkpoints")
    st.add_argument("dir", help="the folder to use as HF_HOME")
    st.set_defaults(func=cmd_standins)
    rh = sub.add_parser("rehearse", help="run lessons through the gpu profile's code (stand-ins or hub models)")
    rh.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    rh.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where models go (default: cpu)")
    rh.add_argument("--hub", action="store_true", help="the real hub checkpoints instead of stand-ins (needs network)")
    rh.add_argument("--cache", help="where to write the stand-ins (default: runs/standins)")
    rh.add_argument("--seeds", default="0", help="COURSE_SEEDS for the rehearsal (default: one seed, '0')")
    rh.set_defaults(func=cmd_rehearse)
    fk = sub.add_parser("fork", help="point the Colab badges and set-up cells at a fork of the course")
    fk.add_argument("url", help="your fork, e.g. https://github.com/me/llm-finetuning-course")
    fk.set_defaults(func=cmd_fork)
    si = sub.add_parser("site", help="build the course as a static website from the notebooks' stored outputs")
    si.add_argument("--out", help="output folder (default: runs/site)")
    si.set_defaults(func=cmd_site)
    rep = sub.add_parser("report", help="render every lesson's measured results as one HTML page")
    rep.add_argument("--out", help="output file (default: runs/report.html)")
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (CourseError, ValueError) as err:
        print(f"course {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
