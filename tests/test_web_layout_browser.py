"""The staff pages fit the screen. At a desktop's 1366 px, as each role, in
Chinese and in English (longer), the navigation keeps every label whole
and the page is no wider than the screen. At a phone's 375 px, every page
the navigation offers is no wider than the screen (a wide table scrolls in
its own box) and no table heading breaks inside a word. (The phone-first
pages, /m/, have their own stricter checks: test_web_mobile_browser.py.)"""

import pytest

from simkit.browser import csp_problems, log_in

SCREENS = {"desktop": dict(viewport={"width": 1366, "height": 800}),
           "phone": dict(viewport={"width": 375, "height": 812}, is_mobile=True)}
USERS = ("admin", "supervisor", "manager1")

PROBLEMS = """(whole) => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width)
    problems.push(`the page is ${document.documentElement.scrollWidth - width}px wider than the screen`);
  for (const el of document.querySelectorAll(whole)) {
    const r = el.getBoundingClientRect();
    if (!r.width || !el.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(el);
    if (range.getBoundingClientRect().height >= 1.5 * parseFloat(getComputedStyle(el).lineHeight))
      problems.push(`"${el.textContent.trim()}" wraps`);
  }
  return problems;
}"""


@pytest.mark.parametrize("screen", SCREENS)
def test_every_staff_page_fits_the_screen(server, browser, screen):
    base, seeded = server
    found = {}
    for username in USERS:
        context = browser.new_context(locale="zh-CN", **SCREENS[screen])
        violations = csp_problems(context)
        page = context.new_page()
        log_in(page, base, username, seeded["passwords"][username])
        links = page.eval_on_selector_all(
            ".navbar-nav a.nav-link", "links => links.map(a => a.getAttribute('href'))")
        assert len(links) >= 5, (username, links)
        # the navigation is the same on every page: at the desktop one page
        # tells; on a phone, every page's tables
        whole = ".navbar .nav-link, .navbar .btn" + (", main th" if screen == "phone" else "")
        for lang in ("zh", "en"):
            for href in (links[:1] if screen == "desktop" else links):
                page.goto(f"{base}{href}{'&' if '?' in href else '?'}lang={lang}")
                problems = page.evaluate(PROBLEMS, whole)
                if problems:
                    found[(username, href, lang)] = problems
        context.close()
        assert not violations, violations
    assert found == {}
