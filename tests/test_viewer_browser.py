"""The viewer page in a real browser: headless Chromium driven by selenium opens the page, picks
a synthetic recording and a task, runs the analysis on a tiny planted model (tests/
inference_fixtures.py: it answers " Yes"), pages forward twice, clicks a window and reads the
model's answer from the page. Screenshots go to the test's tmp folder (and, when
VIEWER_SCREENSHOT names a file, the last one there too: that is how docs/viewer.png is made).

Skipped, saying why, where no Chromium, chromedriver or selenium can be had (CI installs
Debian's chromium and chromium-driver: .ci/run).
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from inference_fixtures import WORKLOAD_EDF_NAMES, write_checkpoints
from raw_fixtures import write_edf

from serve import LOOPBACK_NAMES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1400,1300")
RECORDING_SECONDS = 60


def browser_or_skip(profile: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not Path(path).is_file():
            pytest.skip(f"no {what} at {path} (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as err:  # a browser that cannot start here is a reason to skip, not a failure
        pytest.skip(f"chromium did not start: {str(err).splitlines()[0]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The viewer on a tiny model, served by uvicorn on loopback in this process."""
    import uvicorn

    from viewer import ViewerConfig, create_app
    from viewer.analysis import Engine

    root = tmp_path_factory.mktemp("viewer")
    ckpts = write_checkpoints(root / "ckpts")
    data = root / "data"
    write_edf(data / "workload.edf", WORKLOAD_EDF_NAMES, RECORDING_SECONDS, 250.0, seed=7)
    engine = Engine(ckpts["lm"], ckpts["vq"], device="cpu")
    app = create_app(ViewerConfig(data, root / "out", allowed_hosts=LOOPBACK_NAMES), engine)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_page_runs_an_analysis_pages_and_shows_a_window_answer(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser_or_skip(tmp_path / "profile")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(server + "/")
        row = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, '#recordings tr[data-id="workload.edf"]')))
        Select(driver.find_element(By.ID, "task")).select_by_value("Workload")
        row.click()
        question = driver.find_element(By.ID, "task-question").text
        assert "workload" in question.lower()
        wait.until(lambda d: "0.0 s – 10.0 s" in d.find_element(By.ID, "page-time").text)
        driver.save_screenshot(str(shots / "1-recording.png"))

        driver.find_element(By.ID, "analyse").click()
        wait.until(lambda d: d.find_element(By.ID, "job-state").text.startswith("done"))
        assert driver.find_element(By.ID, "downloads").text.split() [:2] == [
            "windows.csv", "recordings.csv"]
        driver.save_screenshot(str(shots / "2-analysed.png"))

        driver.find_element(By.ID, "next-page").click()
        wait.until(lambda d: d.find_element(By.ID, "page-time").text.startswith("10.0 s"))
        driver.find_element(By.TAG_NAME, "body").send_keys("\ue014")   # the right arrow key
        wait.until(lambda d: d.find_element(By.ID, "page-time").text.startswith("20.0 s"))

        strip = driver.find_element(By.ID, "window-strip")
        # a click a quarter of the way along the strip's plot area (70 px margins for the
        # channel names and the scale bar): a window of 20-30 s
        width = strip.size["width"]
        offset = int(70 + (width - 140) * 0.25) - width // 2
        from selenium.webdriver import ActionChains
        ActionChains(driver).move_to_element_with_offset(strip, offset, 0).click().perform()
        wait.until(ec.visibility_of_element_located((By.ID, "details")))
        title = driver.find_element(By.ID, "detail-title").text
        assert title.startswith("Window ") and "2" in title
        assert driver.find_element(By.ID, "detail-text").text.strip() == "Yes"
        assert driver.find_element(By.ID, "detail-prompt").text == question
        probs = driver.find_element(By.ID, "detail-probs").text
        assert "arithmetic" in probs and "rest" in probs
        driver.save_screenshot(str(shots / "3-window.png"))
    finally:
        driver.quit()
    for shot in shots.iterdir():
        assert shot.stat().st_size > 10_000, shot
    if os.environ.get("VIEWER_SCREENSHOT"):
        shutil.copyfile(shots / "3-window.png", os.environ["VIEWER_SCREENSHOT"])
