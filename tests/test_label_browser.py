"""The label page in a real browser: headless Debian chromium driven by Selenium through the
system chromedriver (given explicitly, so Selenium downloads nothing). 20 objects are
labelled by keyboard and mouse, with an undo and a retrain in between; the labels must be
in the store, and a screenshot of the page is written to docs/label_page.png."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from astrotransfer.label_store import LabelSession
from conftest import ROOT, start_label_server, tiny_run_copy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install "
                    "chromium chromium-driver; .ci/run does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,860", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def test_label_20_objects_by_keyboard_and_mouse(label_store, tiny_run_master, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    run = tiny_run_copy(tiny_run_master, tmp_path / "run")
    proc, url = start_label_server(label_store, "--run", run, "--batch", 12, "--session",
                                   "browser", "--who", "tester")
    expected: dict[str, str] = {}
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")

        def shown() -> str:
            return driver.find_element(By.ID, "objinfo").text.split()[0]

        def progress() -> str:
            return driver.find_element(By.ID, "ptext").text

        def act(do, before: str) -> None:
            do()
            wait.until(lambda d: progress() != before)

        body = driver.find_element(By.TAG_NAME, "body")
        assert progress() == "0 of 12"
        # 10 by keyboard (keys 1 and 2), one of them undone and answered again
        for i in range(10):
            obj, key = shown(), "12"[i % 2]
            act(lambda: body.send_keys(key), progress())
            expected[obj] = ["elliptical", "spiral"][int(key) - 1]
        undone = list(expected)[-1]
        act(lambda: body.send_keys("z"), progress())
        assert shown() == undone and progress() == "9 of 12"
        act(lambda: body.send_keys("1"), progress())
        expected[undone] = "elliptical"
        # 2 by mouse, then the batch is done: retrain the head and queue the next 12 (r)
        buttons = driver.find_elements(By.CSS_SELECTOR, "button.cls")
        for b in (buttons[1], buttons[0]):
            obj = shown()
            act(b.click, progress())
            expected[obj] = b.get_attribute("data-answer")
        assert progress() == "12 of 12"
        act(lambda: body.send_keys("r"), progress())
        assert progress() == "12 of 24"
        # 8 more: 4 by keyboard, 4 by mouse
        for i in range(8):
            obj = shown()
            if i < 4:
                act(lambda: body.send_keys("2"), progress())
                expected[obj] = "spiral"
            else:
                b = driver.find_elements(By.CSS_SELECTOR, "button.cls")[i % 2]
                act(b.click, progress())
                expected[obj] = b.get_attribute("data-answer")
        assert progress() == "20 of 24"
        body.send_keys("b")  # the band picker: RGB composite -> g band, and back
        time.sleep(0.5)
        docs = ROOT / "docs"
        driver.save_screenshot(str(docs / "label_page.png"))
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    session = LabelSession.open(label_store, "browser")
    classes = session.classes
    got = {e.object_id: classes[e.label] for e in session.effective()}
    assert len(expected) == 20 and got == expected
    assert session.attrs["who"] == "tester" and session.attrs["events"][-1]["queued"] == 12
    assert (ROOT / "docs" / "label_page.png").stat().st_size > 10_000
