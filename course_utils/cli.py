"""The `course` command: `doctor`, `build`, `run`, `report`.

    course doctor            check Python, pinned packages, shipped data and models (and the GPU with --gpu)
    course build             regenerate data, tokenizer and the three tiny models (minutes per model)
    course build --smoke --out DIR   the same code path in a few steps, into a scratch folder (CI does this)
    course run [LESSON ...]  execute lessons in order; prints runtime, peak memory and pass/fail per lesson
    course report            one HTML page (runs/report.html) with every lesson's measured table and checks
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from course_utils.errors import CourseError

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


def doctor_checks(gpu: bool = False) -> list[tuple[bool, str]]:
    """(ok, message) for each requirement of the course."""
    from course_utils.paths import DATA_DIR, MODELS_DIR
    from course_utils.profiles import package_version
    from course_utils.world import DATA_FILES
    from course_utils.zoo import FAMILIES

    checks = [(sys.version_info >= (3, 10), f"Python {sys.version.split()[0]} (needs >= 3.10)")]
    for name, want in pinned_requirements().items():
        have = package_version(name)
        checks.append((have == want, f"{name} {have} (pinned {want})"))
    from course_utils.api_contract import check_contract

    drift = check_contract()
    checks.append((not drift, "library API contract" + (": " + "; ".join(drift) if drift else " (every call course_utils makes)")))
    torch_version = package_version("torch")
    checks.append((torch_version != "not installed", f"torch {torch_version} (tested on 2.13 CPU)"))
    for name in ["people.jsonl", *DATA_FILES]:
        path = DATA_DIR / name
        checks.append((path.is_file(), f"data_samples/{name}" + ("" if path.is_file() else " missing: run `course build --data-only`")))
    for family in FAMILIES:
        folder = MODELS_DIR / family
        ok = (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        checks.append((ok, f"shipped model {family}" + ("" if ok else f" missing in {folder}: run `course build`")))
    if gpu:
        import torch

        ok = torch.cuda.is_available()
        checks.append((ok, f"GPU: {torch.cuda.get_device_name(0)}" if ok else "GPU: none visible to torch"))
    return checks


def cmd_doctor(args) -> int:
    checks = doctor_checks(args.gpu)
    for ok, msg in checks:
        print(f"[{'OK' if ok else 'FAIL'}] {msg}")
    failed = sum(not ok for ok, _ in checks)
    print(f"{len(checks) - failed} ok, {failed} failed")
    return 1 if failed else 0


def cmd_build(args) -> int:
    from course_utils.build import build_all
    from course_utils.paths import DATA_DIR
    from course_utils.profiles import set_offline
    from course_utils.zoo import FAMILIES, check_family

    set_offline(True)
    families = [check_family(f) for f in (args.family or FAMILIES)]
    build_all(families, Path(args.out) if args.out else DATA_DIR, smoke=args.smoke, data_only=args.data_only,
              resume=args.resume)
    return 0


def cmd_run(args) -> int:
    from course_utils.runner import format_table, run_lessons

    results, out_dir = run_lessons(args.lessons, write=args.write, keep_going=args.keep_going)
    print(format_table(results))
    print(f"executed notebooks and benchmark.json in {out_dir}")
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"FAILED: lesson {r.lesson}, {r.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args) -> int:
    from course_utils.report import write_report

    out = write_report(Path(args.out) if args.out else None)
    print(f"wrote {out.name} in {out.parent.name}/ (open it in a browser)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="course", description="The fine-tuning course's command.")
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
    b.set_defaults(func=cmd_build)
    r = sub.add_parser("run", help="execute lessons in order and measure them")
    r.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    r.add_argument("--write", action="store_true", help="store the fresh outputs in the committed notebooks")
    r.add_argument("--keep-going", action="store_true", help="run the remaining lessons after a failure")
    r.set_defaults(func=cmd_run)
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
