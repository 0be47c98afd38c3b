"""The admin in a real browser: Debian's Chromium and chromedriver, driven by Selenium, against
pytest-django's live server.

Logs in, opens the dashboard, follows its numbers into the list, opens a parked notification,
retries it with the page's button, and purges another through the styled confirmation page,
checking what each page shows. Skipped when Chromium is not installed, except in CI (``CI`` set),
where it fails: ``.ci/run`` installs it (``apt-get install chromium chromium-driver``).

``PSH_SCREENSHOTS=1`` also saves the screenshots of docs/how-to/admin.md to docs/img/:

    PSH_SCREENSHOTS=1 TEST_DATABASE_NAME=test_psh_admin .venv/bin/python -m pytest -q \
        -p no:cacheprovider tests/test_admin_browser.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import OrderChannel, ProductChannel

from .admin_scenario import seed

pytestmark = pytest.mark.driver_independent

CHROMIUM = os.environ.get("PSH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PSH_CHROMEDRIVER", "/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "img"
WIDTH = 1400


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="psh-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _words(element: Any) -> str:
    """An element's text, its whitespace collapsed (line breaks of block layout included)."""
    return " ".join(str(element.get_attribute("textContent")).split())


def _wait_for(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
    )


def _click(driver: Any, element: Any) -> None:
    """Click and wait for the next page: until the clicked element is gone from the document."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_driver: Any) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Chrome asked about a node while its page is replaced (not a stale reference)
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    element.click()
    WebDriverWait(driver, 10).until(gone)


def _screenshot(driver: Any, name: str) -> None:
    if not os.environ.get("PSH_SCREENSHOTS"):
        return
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(int(height) + 40, 600))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(WIDTH, 1000)


def _fits(driver: Any) -> None:
    """Nothing scrolls sideways at 1,400 px: neither the page nor the list's table (which
    the admin lets scroll inside its box)."""
    width = driver.execute_script("return window.innerWidth")
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll} px wide in a {width} px window"
    boxes = driver.execute_script(
        "return Array.from(document.querySelectorAll('#changelist .results'))"
        ".map(e => [e.scrollWidth, e.clientWidth])"
    )
    for scroll, client in boxes:
        assert scroll <= client, f"the list's table is {scroll} px wide in a {client} px box"


def test_operator_finds_the_parked_notification_and_retries_it(live_server, worker, browser):
    scenario = seed(worker)
    User.objects.create_superuser("operator", "operator@example.com", "correct horse")
    orders, products = OrderChannel.listen_safe_name(), ProductChannel.listen_safe_name()
    driver = browser

    # Log in on the admin's own form; the dashboard is where it sends us.
    dashboard = f"{live_server.url}/admin/pgpubsub_simplehistory/notification/dashboard/"
    driver.get(f"{live_server.url}/admin/login/?next={dashboard}")
    _css(driver, "#id_username").send_keys("operator")
    _css(driver, "#id_password").send_keys("correct horse")
    _click(driver, _css(driver, "input[type=submit]"))
    assert driver.current_url == dashboard
    assert _css(driver, "h1").text == "Notifications dashboard"

    # The queue per channel: each kind of pending counted where it belongs.
    def cell(listen_name: str, state: str) -> str:
        return str(_css(driver, f"#psh-row-{listen_name} td.psh-{state}").text)

    assert cell(orders, "parked") == "1"
    assert cell(orders, "held_back") == "1"
    assert cell(orders, "retry") == "1"
    assert cell(orders, "in_flight") == "1"
    assert cell(orders, "pending") == "6"  # held back, waiting, in flight and three due
    assert cell(products, "parked") == "1"
    assert cell(orders, "oldest").endswith(" s")  # an age, linked
    # The last hour: bars and lag lines drawn, with the totals said in words.
    overall = _css(driver, "#psh-chart-all")
    assert len(_all(driver, "#psh-chart-all rect.psh-bar")) >= 59
    assert _all(driver, "#psh-chart-all polyline.psh-p95")
    assert " processed, " in overall.text and "in the last hour; lag p50 <" in overall.text
    # The parked errors, grouped by their first line.
    errors = _css(driver, "#psh-errors").text
    assert "RuntimeError: listener refuses order" in errors
    assert "ConnectionError: search index at search:9200 refused the connection" in errors
    held = _css(driver, "#psh-blockers").text
    assert f"parked #{scenario.parked.pk}" in held
    _fits(driver)
    _screenshot(driver, "admin-dashboard.png")

    # The held-back number leads to the list, filtered, saying what holds the row back.
    _click(driver, _css(driver, f"#psh-row-{orders} td.psh-held_back a"))
    assert "state=held_back" in driver.current_url
    rows = _all(driver, "#result_list tbody tr")
    assert len(rows) == 1
    expected = f"held back by parked #{scenario.parked.pk} (object {scenario.parked.object_id})"
    assert expected in _words(rows[0])
    assert OrderChannel.name() in _words(rows[0])  # the class path, not the listen name
    _fits(driver)

    # The whole list fits too, its columns included.
    driver.get(f"{live_server.url}/admin/pgpubsub_simplehistory/notification/")
    assert len(_all(driver, "#result_list tbody tr")) >= 8
    _fits(driver)
    _screenshot(driver, "admin-list.png")

    # The parked notification's page.
    driver.get(f"{live_server.url}/admin/pgpubsub_simplehistory/notification/?state=held_back")
    _click(driver, _css(driver, "#result_list td.field-state_detail a"))
    assert _css(driver, "h1").text == f"Notification #{scenario.parked.pk}"
    page = _css(driver, "#content").text
    assert "Change notification" not in driver.page_source
    assert "update (~)" in page or "insert (+)" in page
    assert OrderChannel.name() in page  # the channel's class path
    migration = _css(driver, "div.field-migration div.readonly").text
    assert migration.startswith("shop.0"), migration
    created = _css(driver, "div.field-created div.readonly").text
    assert len(created.split()[-1].split(":")) == 3  # with seconds
    traceback = _css(driver, "div.field-traceback pre")
    assert traceback.value_of_css_property("white-space") == "pre"
    text = traceback.get_attribute("textContent")
    assert "Traceback (most recent call last):" in text
    assert '\n  File "' in text and "\n    " in text  # indentation kept
    assert "listener refuses order" in _css(driver, "div.field-error_text pre").text
    _fits(driver)
    _screenshot(driver, "admin-detail.png")

    # Retry: the button posts the list's action for this notification only.
    _click(driver, _css(driver, "#psh-retry"))
    assert _css(driver, "h1").text == f"Notification #{scenario.parked.pk}"
    assert "1 parked notification made pending." in _css(driver, "ul.messagelist").text
    assert _css(driver, "div.field-state_detail div.readonly").text == "pending"
    assert not _all(driver, "#psh-retry")  # nothing to retry any more
    retried = Notification.objects.get(pk=scenario.parked.pk)
    assert (retried.state, retried.attempts) == ("pending", 0)

    # Purge the other parked one, through the confirmation page.
    driver.get(
        f"{live_server.url}/admin/pgpubsub_simplehistory/notification/"
        f"{scenario.product_parked.pk}/change/"
    )
    _click(driver, _css(driver, "#psh-purge"))
    assert "delete-confirmation" in _css(driver, "body").get_attribute("class")
    assert "Purge parked notifications" in _css(driver, "div.breadcrumbs").text
    confirm = _css(driver, "#psh-purge-confirm")
    assert confirm.value_of_css_property("background-color") == "rgba(186, 33, 33, 1)"  # danger
    _screenshot(driver, "admin-purge.png")
    _click(driver, _css(driver, "a.cancel-link"))  # back to the notification, nothing deleted
    assert _css(driver, "h1").text == f"Notification #{scenario.product_parked.pk}"
    _click(driver, _css(driver, "#psh-purge"))
    _click(driver, _css(driver, "#psh-purge-confirm"))
    assert "1 parked notification deleted." in _css(driver, "ul.messagelist").text
    assert not Notification.objects.filter(pk=scenario.product_parked.pk).exists()

    # The dashboard again: nothing parked any more.
    driver.get(dashboard)
    assert cell(orders, "parked") == "0" and cell(products, "parked") == "0"
    assert _css(driver, "#psh-no-errors").text == "No parked notifications."
