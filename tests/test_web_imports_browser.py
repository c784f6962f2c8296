"""Import in a real browser (Debian chromium via Playwright): an
administrator uploads a customer list with bad rows, sees the preview,
downloads the rejected rows, commits the good ones, fixes the rejects in
the downloaded workbook and imports it again."""

import os
from pathlib import Path

import openpyxl

from simkit.browser import log_in


def _upload(page, base, path):
    page.get_by_role("link", name="导入", exact=True).click()
    page.get_by_label("导入内容").select_option(label="客户名单")
    page.get_by_label("县区（未填县区的行使用）").select_option(label="示范县 (demo)")
    page.get_by_label("电子表格（.xlsx 或 .csv）").set_input_files(str(path))
    page.get_by_role("button", name="上传并校验").click()
    page.locator("#counts, #error").first.wait_for(timeout=120_000)  # reloads when checked
    assert page.locator("#counts").count() == 1, page.locator("main").inner_text()


def _shoot(page, name):
    """For README: saved when scripts/screenshots sets KHHF_SCREENSHOTS_DIR."""
    out = os.environ.get("KHHF_SCREENSHOTS_DIR")
    if out:
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def _commit(page):
    page.locator("#commit").click()
    page.locator("#committed, #error").first.wait_for(timeout=120_000)
    assert page.locator("#committed").count() == 1, page.locator("main").inner_text()


def test_admin_imports_with_bad_rows_downloads_rejects_fixes_and_reimports(server, page,
                                                                           tmp_path):
    base, seeded = server
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["十一月回访名单"])
    sheet.merge_cells("A1:D1")
    sheet.append(["客户姓名", "手机号码", "客户经理工号", "备注"])
    sheet.append(["好客户", 13512340001.0, "D001", "按时回访"])
    sheet.append(["坏号码", "135-1234", "", ""])
    sheet.append(["错工号", "１３５１２３４０００３", "X404", ""])
    sheet.append([])
    path = tmp_path / "名单.xlsx"
    workbook.save(path)

    log_in(page, base, "admin", seeded["passwords"]["admin"])
    _upload(page, base, path)
    assert page.locator("#count-rows").inner_text() == "3"
    assert page.locator("#count-good").inner_text() == "1"
    assert page.locator("#count-rejected").inner_text() == "2"
    rejects = page.locator("#rejects tbody")
    assert "不是有效的电话号码" in rejects.inner_text()
    assert "未知的客户经理工号 X404" in rejects.inner_text()
    assert rejects.locator("tr").first.inner_text().startswith("4")  # row number as in Excel
    _shoot(page, "import-preview")

    with page.expect_download() as download:
        page.locator("#download-rejects").click()
    fixed = tmp_path / "rejects.xlsx"
    download.value.save_as(fixed)
    workbook = openpyxl.load_workbook(fixed)
    rows = list(workbook.active.iter_rows(values_only=True))
    assert rows[0] == ("客户姓名", "手机号码", "客户经理工号", "备注", "错误原因")
    assert [r[0] for r in rows[1:]] == ["坏号码", "错工号"]
    assert "手机号码" in rows[1][4] and "X404" in rows[2][4]

    _commit(page)
    assert "已导入 1 行" in page.locator("#committed").inner_text()

    sheet = workbook.active
    sheet["B2"] = "13512340002"
    sheet["C3"] = "D002"
    workbook.save(fixed)
    _upload(page, base, fixed)
    assert page.locator("#count-good").inner_text() == "2"
    assert page.locator("#count-rejected").inner_text() == "0"
    _commit(page)

    page.get_by_role("link", name="客户管理", exact=True).click()
    page.get_by_label("姓名或号码").fill("错工号")
    page.get_by_role("button", name="搜索").click()
    table = page.locator("#customers")
    assert "王芳" in table.inner_text() and "135****0003" in table.inner_text()
    table.get_by_role("link", name="错工号").click()
    assert page.locator("#customer-phone").inner_text() == "13512340003"
    assert "文件导入" in page.locator("#history").inner_text()
    _shoot(page, "customer-detail")


def test_supervisor_sets_do_not_call_with_a_reason(server, page):
    base, seeded = server
    log_in(page, base, "supervisor", seeded["passwords"]["supervisor"])
    page.get_by_role("link", name="客户管理", exact=True).click()
    page.locator("#customers tbody a").first.click()
    page.get_by_role("button", name="设为请勿呼叫").click()
    assert "请填写原因" in page.locator("#dnc").inner_text()
    page.locator("#dnc").get_by_label("原因").fill("客户来电要求不再回访")
    page.get_by_role("button", name="设为请勿呼叫").click()
    assert "已设为请勿呼叫" in page.locator(".alert-success").inner_text()
    assert page.locator("#dnc-badge").count() == 1


def test_an_unrecognised_column_is_mapped_in_the_page(server, page, tmp_path):
    base, seeded = server
    path = tmp_path / "wps.csv"
    path.write_bytes("姓名,联系方式X\n映射客户,13512349999\n".encode("gb18030"))
    log_in(page, base, "supervisor", seeded["passwords"]["supervisor"])
    page.get_by_role("link", name="导入", exact=True).click()
    page.get_by_label("电子表格（.xlsx 或 .csv）").set_input_files(str(path))
    page.get_by_role("button", name="上传并校验").click()
    page.locator("#mapping").wait_for(timeout=60_000)
    assert "缺少“手机号码”列" in page.locator("#error").inner_text()
    page.get_by_label("联系方式X").select_option(label="手机号码")
    page.get_by_role("button", name="按此对应重新校验").click()
    page.locator("#counts, #error").first.wait_for(timeout=120_000)
    assert page.locator("#count-good").inner_text() == "1"
    _commit(page)
