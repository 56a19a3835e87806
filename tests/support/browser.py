"""A real headless Chromium for tests that drive pages the daemon serves, and helpers for form tests.

Why a real browser: what a customer meets is what the browser makes of the HTML (tab order, which
field ENTER submits, labels a screen reader reads out), and none of that shows in an HTTP client.

The driver is always the apt pair ``chromium`` + ``chromium-driver`` (same version, so they always
fit each other), found on PATH and handed to Selenium as ``Service(executable_path=...)``: Selenium
Manager is never asked, so nothing is ever downloaded (``SE_OFFLINE=true`` as well, should anything
reach it). Without them the ``browser`` fixture skips, saying what to install; with
``MAILGATE_REQUIRE_BROWSER`` set it fails instead, so a CI run cannot turn into a quiet skip.

``browser`` is function-scoped: each test gets a new browser with its own empty profile (cookies,
local storage, cache, saved form data), so no test sees another's session, and a browser a test
crashed or left on an alert costs that test only. Starting one takes about 0.5-1 s, less than the
daemon each end-to-end test already starts. Window: ``desktop`` by default; a test that wants a phone
asks for it with ``@pytest.mark.parametrize("browser", ["phone"], indirect=True)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.wait import WebDriverWait

# Selenium Manager would fetch a driver from the internet; the driver is always given, so this only
# guards against a code path that forgets to give it.
os.environ["SE_OFFLINE"] = "true"

Window = Literal["desktop", "phone"]
T = TypeVar("T")

REQUIRE_ENV = "MAILGATE_REQUIRE_BROWSER"
INSTALL_HINT = "apt-get install chromium chromium-driver"
# A page may be slow on a loaded CI machine; a hung one should still fail well before pytest's 300 s.
PAGE_LOAD_CEILING = 120

_COMMON_ARGS = (
    "--headless=new",
    "--no-sandbox",                # CI runs as root, and Chromium's sandbox refuses root
    "--disable-dev-shm-usage",     # containers give /dev/shm 64 MB; Chromium crashes when it fills
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",  # no update, sync or safe-browsing calls to the internet
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--lang=en-US",
)
_DESKTOP = (1280, 900)
# An iPhone 12-14 sized screen: Chromium's mobile emulation lays pages out at this width and honours
# <meta name="viewport">, as a phone does, rather than just drawing a narrow desktop window.
_PHONE = {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0, "touch": True, "mobile": True}}


@dataclass(frozen=True)
class BrowserBinaries:
    chromium: str
    chromedriver: str


class BrowserUnavailable(RuntimeError):
    """Chromium or its driver is not installed."""


def find_binaries() -> BrowserBinaries:
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver)) if path is None]
    if chromium is None or chromedriver is None:
        raise BrowserUnavailable(f"{' and '.join(missing)} not found on PATH ({INSTALL_HINT})")
    return BrowserBinaries(chromium, chromedriver)


def chrome_options(binaries: BrowserBinaries, window: Window, profile: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = binaries.chromium
    for arg in _COMMON_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    if window == "phone":
        options.add_experimental_option("mobileEmulation", _PHONE)
        options.add_argument("--window-size={width},{height}".format(**_PHONE["deviceMetrics"]))
    else:
        options.add_argument(f"--window-size={_DESKTOP[0]},{_DESKTOP[1]}")
    return options


@contextmanager
def start_browser(workdir: Path, window: Window = "desktop") -> Iterator[webdriver.Chrome]:
    """A headless Chromium with its profile and driver log under ``workdir``, quit on leaving.

    For a test that needs two browsers at once (say an agent's and a customer's); the ``browser``
    fixture is this with a skip or fail when Chromium is missing.
    """
    binaries = find_binaries()
    run = Path(tempfile.mkdtemp(prefix=f"browser-{window}-", dir=workdir))  # one per browser, so two can share workdir
    profile = run / "profile"
    log = run / "chromedriver.log"
    service = Service(executable_path=binaries.chromedriver, log_output=str(log))
    try:
        driver = webdriver.Chrome(service=service, options=chrome_options(binaries, window, profile))
    except WebDriverException as exc:
        # The driver's own log says why (a missing library, a version mismatch, a crash).
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no driver log)"
        raise RuntimeError(f"{binaries.chromium} did not start under {binaries.chromedriver}: {exc.msg}\n"
                           f"--- chromedriver log (end) ---\n{tail}") from None
    try:
        driver.set_page_load_timeout(PAGE_LOAD_CEILING)
        yield driver
    finally:
        driver.quit()  # also stops chromedriver, even when the browser has already crashed


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium, quit after the test whatever its outcome."""
    window: Window = getattr(request, "param", "desktop")
    try:
        find_binaries()
        missing = ""
    except BrowserUnavailable as exc:
        missing = str(exc)
    if missing and os.environ.get(REQUIRE_ENV):
        pytest.fail(f"a browser is required ({REQUIRE_ENV} is set): {missing}", pytrace=False)
    if missing:
        pytest.skip(f"no browser for this test: {missing}; set {REQUIRE_ENV}=1 to make this a failure")
    with start_browser(tmp_path, window) as driver:
        yield driver


def wait_for(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Literal[False] | T], timeout: float = 60,
             what: str | None = None) -> T:
    """Wait until ``condition(driver)`` is truthy and return it; fail naming ``what`` and the page.

    The ceiling is generous because the wait ends as soon as the condition holds: it costs nothing
    on a quick machine and keeps a loaded one from failing. Exceptions from the condition other
    than a missing element (Selenium's own retry) fail at once rather than being waited out.
    """
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        label = what or getattr(condition, "__name__", repr(condition))
        raise AssertionError(f"timed out after {timeout} s waiting for {label} "
                             f"(page {driver.current_url!r}, title {driver.title!r})") from None


def press(driver: webdriver.Chrome, *keys: str) -> None:
    """Type ``keys`` (text or ``Keys.TAB``/``Keys.ENTER``...) into whatever has focus, as a user at a keyboard."""
    ActionChains(driver).send_keys(*keys).perform()


def focused_name(driver: webdriver.Chrome) -> str:
    """The ``name`` (else ``id``) of the element that has focus, to follow the tab order."""
    element = driver.switch_to.active_element
    return element.get_attribute("name") or element.get_attribute("id") or element.tag_name


# Runs in the page. A form control has a name for assistive technology when a <label> is tied to it
# (for= or wrapping: el.labels), or aria-labelledby points at text, or aria-label is set; a placeholder
# or title alone is not enough (WCAG 1.3.1, 4.1.2). Hidden inputs, buttons (named by their text or
# value) and controls not rendered (display:none, visibility:hidden) are left out.
_UNLABELLED_JS = """
const text = (s) => (s || "").trim();
const skipTypes = new Set(["hidden", "submit", "button", "reset", "image"]);
const out = [];
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.tagName === "INPUT" && skipTypes.has(el.type)) continue;
  if (!el.checkVisibility({visibilityProperty: true, checkVisibilityCSS: true})) continue;
  const byLabel = Array.from(el.labels || []).some((l) => text(l.textContent));
  const byRef = text(el.getAttribute("aria-labelledby")).split(/\\s+/).filter(Boolean)
    .some((id) => text((document.getElementById(id) || {}).textContent));
  const byAria = text(el.getAttribute("aria-label")) !== "";
  if (!(byLabel || byRef || byAria)) {
    const name = el.getAttribute("name"), id = el.id;
    out.push(el.tagName.toLowerCase() + (id ? "#" + id : "") + (name ? "[name=" + name + "]" : ""));
  }
}
return out;
"""


def unlabelled_inputs(driver: webdriver.Chrome) -> list[str]:
    """The page's visible form controls a screen reader could not name, e.g. ``['input[name=email]']``.

    A test asserts ``unlabelled_inputs(browser) == []`` so every field says what it is for.
    """
    found = driver.execute_script(_UNLABELLED_JS)
    assert isinstance(found, list)
    return [str(item) for item in found]
