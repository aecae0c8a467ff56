"""The web UI in a real browser: `unitune ui` on the tiny model, driven through Debian's chromium.

Skipped when gradio, selenium or chromium is missing, except on CI (CI=true), where that is a failure.
"""

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from unitune import read_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "src/unitune/assets/examples/shapes.png"
CHROMIUM = os.environ.get("UNITUNE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("UNITUNE_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 60  # seconds for any one thing to appear; the shared CPU can be slow


def require(available: bool, what: str) -> None:
    if available:
        return
    message = f"{what} is missing (bash scripts/setup.sh installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """`unitune ui` in a subprocess on a free loopback port, with few tune and sampling steps."""
    require(importable("gradio"), "gradio (pip install 'unitune[ui]')")
    port, folder = free_port(), tmp_path_factory.mktemp("ui")
    command = [sys.executable, "-m", "unitune.cli", "ui", "--model", tiny_model, "--port", str(port)]
    command += ["--cache-dir", str(folder / "cache"), "--tune-steps", "2", "--steps", "4"]
    command += ["--max-file-size", "1mb"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder)}
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"unitune ui exited with {process.returncode}:\n{(folder / 'server.log').read_text()}"
                )
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"unitune ui did not answer:\n{(folder / 'server.log').read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(importable("selenium"), "selenium (pip install -e '.[dev]')")
    require(Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(), "chromium + chromium-driver (apt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1300",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.25).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}; page text:\n{page_text(driver)}") from None


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def toasts(driver) -> str:
    """The text of gradio's notifications (gr.Error, gr.Info, upload errors), shown or collapsed."""
    texts = driver.find_elements("css selector", "[data-testid=toast-text]")
    return "\n".join(t.get_attribute("textContent") for t in texts)


def find(driver, css: str):
    return wait_for(driver, lambda d: d.find_element("css selector", css), css)


def open_app(driver, url: str) -> None:
    driver.get(url)
    find(driver, "#upload input[type=file]")


def upload(driver, path: Path) -> None:
    driver.find_element("css selector", "#upload input[type=file]").send_keys(str(path))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_upload_tune_edit_in_browser(server, browser, tmp_path):
    open_app(browser, server)
    upload(browser, EXAMPLE)
    find(browser, "#base img")
    wait_for(browser, lambda d: "Not tuned yet" in d.find_element("id", "tune-status").text, "tune status")
    browser.find_element("xpath", "//*[normalize-space(text())='Tune settings']").click()  # the accordion
    set_text(browser, "#decoder-steps", "3")  # the tune fits the decoder; its edits decode behind the gate

    browser.find_element("id", "tune-btn").click()
    wait_for(browser, lambda d: "Tuned in" in d.find_element("id", "tune-status").text, "the tune to finish")

    browser.find_element("css selector", "#prompts textarea").send_keys("on a green background")
    set_text(browser, "#negative", "a red circle")
    browser.find_element("id", "edit-btn").click()
    result = find(browser, "#results img")
    # the second use of the image reuses the tune, and says so
    wait_for(browser, lambda d: "reused the cached tune" in d.find_element("id", "tune-status").text, "reuse")
    find(browser, "#compare img")
    browser.save_screenshot(str(tmp_path / "ui.png"))

    # the edit is an image at the model's size, as the base image is shown
    output = Image.open(io.BytesIO(fetch(result.get_attribute("src"))))
    base = Image.open(
        io.BytesIO(fetch(browser.find_element("css selector", "#base img").get_attribute("src")))
    )
    assert output.size == base.size
    assert json.loads(output.text["unitune"])["prompt"] == "on a green background"  # the gallery's file too
    assert output.convert("RGB").getextrema() != ((0, 0), (0, 0), (0, 0))
    link = find(browser, "#downloads a[href$='.png']")
    downloaded = tmp_path / "download.png"
    downloaded.write_bytes(fetch(link.get_attribute("href")))
    settings = read_settings(downloaded)
    assert settings["prompt"] == "on a green background"
    assert settings["steps"] == 4 and settings["tune"]["steps"] == 2
    assert settings["negative_prompt"] == "a red circle"
    assert settings["tune"]["decoder_steps"] == 3 and settings["decoder_gate"] == 0.3

    open_tab(browser, "History")
    wait_for(browser, lambda d: "on a green background" in d.find_element("id", "history").text, "history")

    open_tab(browser, "Sweep")
    browser.find_element("css selector", "#sweep-prompt textarea, #sweep-prompt input").send_keys("pixel art")
    set_text(browser, "#guidances", "5, 10")
    set_text(browser, "#strengths", "0.5, 1")
    browser.find_element("id", "sweep-btn").click()
    sheet = find(browser, "#sheet img")
    contact = Image.open(io.BytesIO(fetch(sheet.get_attribute("src"))))
    assert contact.width > 2 * base.width and contact.height > 2 * base.height  # a 2 x 2 grid with labels
    wait_for(
        browser, lambda d: len(d.find_elements("css selector", "#sweep-files a[href$='.png']")) == 5, "files"
    )
    browser.save_screenshot(str(tmp_path / "ui-sweep.png"))

    # another image (a bundled example): not tuned yet, and the last image's edits are gone
    open_tab(browser, "Edit")
    browser.find_elements("css selector", "#examples img")[1].click()
    wait_for(browser, lambda d: "Not tuned yet" in d.find_element("id", "tune-status").text, "the new image")
    wait_for(browser, lambda d: not d.find_elements("css selector", "#results img"), "the old edits to go")


def open_tab(driver, name: str) -> None:
    [tab] = [b for b in driver.find_elements("css selector", "button[role=tab]") if b.text == name]
    tab.click()


def set_text(driver, css: str, text: str) -> None:
    box = find(driver, f"{css} textarea, {css} input")
    box.clear()
    box.send_keys(text)


def test_broken_file_shows_friendly_error(server, browser, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("this is not an image\n")
    open_app(browser, server)
    upload(browser, broken)
    wait_for(browser, lambda d: "broken.png: not an image file" in toasts(d), "the error message")
    assert "Traceback" not in page_text(browser)
    assert not browser.find_elements("css selector", "#base img")


def test_upload_over_the_size_limit_is_refused(server, browser, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(1_500_000))
    open_app(browser, server)
    upload(browser, big)
    wait_for(browser, lambda d: "exceed the maximum allowed size of 1.0 Mb" in toasts(d), "the size error")
    assert not browser.find_elements("css selector", "#base img")


def test_stop_button_interrupts_a_long_tune(server, browser):
    open_app(browser, server)
    upload(browser, EXAMPLE)
    find(browser, "#base img")
    accordion = [b for b in browser.find_elements("css selector", "button") if "Tune settings" in b.text]
    accordion[0].click()
    steps = find(browser, "#tune-steps input")
    steps.clear()
    steps.send_keys("100000\n")
    wait_for(
        browser, lambda d: "100000 steps" in d.find_element("id", "tune-status").text, "the new settings"
    )

    browser.find_element("id", "tune-btn").click()
    wait_for(browser, lambda d: "Tuning on the image" in page_text(d), "the tune progress bar")
    browser.find_element("id", "stop-btn").click()
    wait_for(browser, lambda d: "Stopped on request" in toasts(d), "the stop message")
    assert "Not tuned yet" in browser.find_element("id", "tune-status").text


def test_the_working_size_box_fits_the_image_again(server, browser):
    """The session's size box refits the uploaded image (a larger base), and an absurd size is a message."""

    def base_size():
        return Image.open(io.BytesIO(fetch(find(browser, "#base img").get_attribute("src")))).size

    open_app(browser, server)
    upload(browser, EXAMPLE)
    native = base_size()
    set_text(browser, "#work-size", "96\n")
    wait_for(browser, lambda d: base_size()[0] > native[0], "the refitted base image")
    assert abs(base_size()[0] / base_size()[1] - native[0] / native[1]) < 0.1
    set_text(browser, "#work-size", "100000\n")
    wait_for(browser, lambda d: "size must be <= 4096 pixels, got 100000" in toasts(d), "the size error")
    assert "Traceback" not in page_text(browser)


def test_a_painted_mask_reaches_the_edit_and_its_settings(server, browser, tmp_path):
    """Paint a stroke on the brush canvas over the base image; the edit is localised to it: its saved
    settings say the mask was the user's (and carry the inversion and regions checkboxes, the mask
    guidance and the mask grow sliders), its mask file is offered, and the overlay is shown."""
    from selenium.webdriver.common.action_chains import ActionChains

    open_app(browser, server)
    upload(browser, EXAMPLE)
    find(browser, "#base img")
    [accordion] = [b for b in browser.find_elements("css selector", "button") if "Localise" in b.text]
    accordion.click()
    canvas = wait_for(browser, lambda d: _brush_canvas(d), "the brush canvas with the base image")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    # from the canvas centre (the image is shown centred, zoomed to fit), a short stroke to the right
    stroke = ActionChains(browser).move_to_element_with_offset(canvas, -30, 0).click_and_hold()
    for _ in range(6):
        stroke = stroke.move_by_offset(10, 1)
    stroke.release().perform()
    browser.save_screenshot(str(tmp_path / "ui-brush.png"))

    browser.find_element("css selector", "#inversion input[type=checkbox]").click()  # the tiny model: off
    browser.find_element("css selector", "#mask-regions input[type=checkbox]").click()  # off there too
    grow = find(browser, "#mask-grow input[type=number]")
    grow.clear()
    grow.send_keys("3\n")  # grow the painted mask by 3 px
    browser.find_element("css selector", "#prompts textarea").send_keys("on a green background")
    browser.find_element("id", "edit-btn").click()
    find(browser, "#results img")
    find(browser, "#masks img")
    browser.save_screenshot(str(tmp_path / "ui-localised.png"))
    link = find(browser, "#downloads a[href$='-mask.png']")
    mask = Image.open(io.BytesIO(fetch(link.get_attribute("href")))).convert("L")
    settings = json.loads(mask.info["unitune"])
    assert settings["mask_source"] == "user" and 0 < settings["mask_coverage"] < 0.5
    assert settings["inversion"] is True  # the checkbox reached the edit
    assert settings["mask_guidance"] == settings["guidance"]  # the slider starts at the edit's guidance
    assert settings["auto_mask_guidance"] == settings["mask_guidance"]  # unset for this model: the same
    assert settings["mask_grow"] == 3  # the grow slider reached the edit
    assert settings["mask_regions"] is True  # so did the regions checkbox (a painted mask goes first)
    assert 0 < sum(mask.point(lambda v: v > 127 and 255).histogram()[255:]) < mask.width * mask.height


def _brush_canvas(driver):
    canvases = [c for c in driver.find_elements("css selector", "#brush canvas") if c.size["width"] > 20]
    return canvases[0] if canvases else None
