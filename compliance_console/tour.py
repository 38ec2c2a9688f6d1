"""An officer's walk through the console in a real browser, with a screenshot of each page.

The demo uses it to approve one hospital's share of the study the way an officer would
(log in, read the queue and the request, approve the whole study), then to show the
ledger and the audit log; the screenshots land in ``results/console/``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConsoleTour"]


class ConsoleTour:
    def __init__(self, url: str, out_dir: Path, *, on_close=None):
        from .browser import open_browser

        self.url, self.out, self.on_close = url.rstrip("/"), Path(out_dir), on_close
        self.driver = open_browser()
        self.shots: list[Path] = []

    def shot(self, name: str) -> Path:
        from .browser import full_page_png

        path = full_page_png(self.driver, self.out / f"{len(self.shots) + 1:02d}-{name}.png")
        self.shots.append(path)
        return path

    def _find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def login(self, email: str, password: str, *, screenshot: bool = True) -> None:
        self.driver.get(self.url + "/login")
        self._find("#email").send_keys(email)
        self._find("#password").send_keys(password)
        if screenshot:
            self.shot("login")
        self._find("#login").click()
        if self.driver.current_url.rstrip("/") != self.url:
            raise RuntimeError("the console did not accept the officer's login")

    def queue(self) -> None:
        self.driver.get(self.url + "/")
        self.shot("queue")

    def first_request(self, study: str) -> None:
        rows = self.driver.find_elements("css selector", f'section[data-study="{study}"] tbody tr a')
        if rows:
            rows[0].click()
            self.shot("request")

    def approve_study(self, study: str, *, purpose: str, irb: str, expires: str) -> str:
        """Fill in the study's approval form and send it; returns the console's message."""
        self.driver.get(self.url + "/")
        section = self._find(f'section[data-study="{study}"]')
        section.find_element("css selector", "details summary").click()
        form = section.find_element("css selector", "form.study-approve")
        form.find_element("name", "purpose").send_keys(purpose)
        form.find_element("name", "irb").send_keys(irb)
        self.driver.execute_script("arguments[0].value = arguments[1]", form.find_element("name", "expires"), expires)
        self.shot("approve-study")
        form.find_element("css selector", "button[type=submit]").click()
        message = self._find("#flash").text
        self.driver.get(self.url + "/?all=1")
        self.shot("decided")
        return message

    def ledger_and_audit(self) -> None:
        self.driver.get(self.url + "/ledger")
        self.shot("ledger")
        self.driver.get(self.url + "/audit")
        self.shot("audit")

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            if self.on_close is not None:  # e.g. stop the console this tour was given
                self.on_close()
