"""Screenshot the web UI for the docs: pick the shapes example, tune, edit, capture docs/images/ui.png.

    OMP_NUM_THREADS=1 python scripts/ui_screenshot.py                    # the embedded model
    OMP_NUM_THREADS=1 python scripts/ui_screenshot.py --model tiny-sd/ --out /tmp/ui.png

Drives Debian's chromium (apt: chromium chromium-driver) through selenium, headless, like tests/test_ui.py.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from unitune import Editor, TuneSettings
from unitune.ui.app import launch

ROOT = Path(__file__).resolve().parents[1]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id, diffusers folder or .safetensors [default: embedded]")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/ui.png")
    parser.add_argument("--prompts", default="on a green background\na yellow circle")
    parser.add_argument("--tune-steps", type=int, default=TuneSettings().steps)
    parser.add_argument("--method", default=TuneSettings().method)
    parser.add_argument("--steps", type=int, help="sampling steps [default: the model's]")
    parser.add_argument("--guidance", type=float, help="[default: the model's]")
    parser.add_argument("--strength", type=float, help="[default: the model's]")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the tune + edits")
    args = parser.parse_args()

    cache = tempfile.mkdtemp(prefix="unitune-screenshot-cache-")  # a fresh tune, so the UI shows one
    editor = Editor.load(args.model, cache_dir=cache)
    tune = TuneSettings(method=args.method, steps=args.tune_steps)
    given = {"steps": args.steps, "guidance": args.guidance, "strength": args.strength}
    edit = replace(editor.default_edit_settings(), **{k: v for k, v in given.items() if v is not None})
    port = free_port()
    demo = launch(editor, port=port, tune_settings=tune, edit_settings=edit, block=False)
    try:
        capture(f"http://127.0.0.1:{port}/", args)
    finally:
        demo.close()
    print(args.out)


def capture(url: str, args) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, "--window-size=1400,1150", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, args.timeout, poll_frequency=0.5)
        wait.until(lambda d: d.find_elements("css selector", "#examples img"))[0].click()  # shapes.png
        wait.until(lambda d: d.find_elements("css selector", "#base img"))
        driver.find_element("id", "tune-btn").click()
        wait.until(lambda d: "Tuned in" in d.find_element("id", "tune-status").text)
        driver.find_element("css selector", "#prompts textarea").send_keys(args.prompts)
        driver.find_element("id", "edit-btn").click()
        count = len([p for p in args.prompts.splitlines() if p.strip()])
        wait.until(lambda d: len(d.find_elements("css selector", "#results img")) >= count)
        wait.until(lambda d: d.find_elements("css selector", "#compare img"))
        time.sleep(1)  # let the images finish drawing
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
