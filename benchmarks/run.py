"""Run every benchmark and print a Markdown report (paste into RESULTS.md with the date)."""
import pathlib
import runpy
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

for script in sorted(HERE.glob("bench_*.py")):
    runpy.run_path(str(script), run_name="__main__")
