"""The report renders in a real browser: headless Chromium driven by Selenium (Debian: chromium, chromium-driver)."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from meta_learning.report import build_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
WIDTH, HEIGHT = 1400, 1000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found (apt-get install chromium)"),
    pytest.mark.skipif(DRIVER is None, reason="chromedriver not found (apt-get install chromium-driver)"),
]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--force-device-scale-factor=1", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


IMAGES_JS = """
return Array.from(document.images).map(img => [img.complete, img.naturalWidth, img.naturalHeight, img.dataset.file]);
"""


def open_page(driver, path: Path) -> list[list]:
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return driver.execute_script(IMAGES_JS)


def test_report_renders_in_headless_chromium(browser, protonet_run, maml_run, continual_run, tmp_path):
    out = tmp_path / "report"
    page = build_report([protonet_run, maml_run, continual_run], out)
    shown = open_page(browser, page)
    expected = ["learning_curves.png", "adaptation_curves.png", "accuracy_matrix_3_ewc.png", "parameter_efficiency.png"]
    assert [file for *_, file in shown] == expected
    for complete, width, height, file in shown:  # every figure decoded, at the size of the PNG beside the page
        assert complete and width > 0, file
        assert (width, height) == Image.open(out / file).size, file
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    assert browser.title == "meta-learning report"
    rows = browser.execute_script("return document.querySelectorAll('#comparison tbody tr').length")
    assert rows == 3
    assert browser.execute_script("return document.querySelectorAll('script').length") == 0  # the name is escaped

    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
    inner = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    assert shot.format == "PNG" and shot.size == tuple(inner) and shot.size[0] == WIDTH
    colours = shot.convert("RGB").getcolors(1 << 24)
    assert len(colours) > 50  # text, table and figure, not a blank page
    white = max(count for count, c in colours if c == (255, 255, 255))
    assert white < 0.97 * shot.size[0] * shot.size[1]
    (tmp_path / "screenshot.png").write_bytes(browser.get_screenshot_as_png())

    # the same check sees a broken figure: corrupt one embedded PNG and it no longer decodes
    html = page.read_text()
    first = re.search(r"base64,([A-Za-z0-9+/=]+)", html)
    assert first is not None
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    (out / "broken.html").write_text(html.replace(first.group(1), broken, 1))
    decoded = [width > 0 for _, width, _, _ in open_page(browser, out / "broken.html")]
    assert decoded == [False, True, True, True]
