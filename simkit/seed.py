"""Demo data: one county, its unified number, an admin, a supervisor, three
customer managers with desk phones, and a few customers.

`seed` is idempotent: run twice, it creates nothing new, but it gives the
demo users fresh random passwords (they are stored only hashed, so the
demo can print working log-ins only by setting them again).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

import datetime as dt

from khhf.models import (Campaign, County, Customer, CustomerAssignment, Manager, ResultCode, Task,
                         TaskType, User)
from khhf.services import accounts, counties

COUNTY_CODE = "demo"
COUNTY_NAME = "示范县"
UNIFIED_NUMBER = "13900000000"
MANAGERS = (
    # username, display name, employee no, desk extension, mobile
    ("manager1", "张伟", "D001", "8001", "13800138001"),
    ("manager2", "王芳", "D002", "8002", "13800138002"),
    ("manager3", "李娜", "D003", "8003", "13800138003"),
)
CUSTOMERS_PER_MANAGER = 3
# the return-visit task type and the codes a manager files (web, SMS or keypad)
RESULT_CODES = (("1", "满意", True), ("2", "基本满意", True), ("3", "不满意", False),
                ("4", "拒绝回访", False), ("9", "号码有误", False))


def seed(session: Session) -> dict:
    """Create the demo data if missing; the caller commits.

    Returns {"county": {"id", "code", "name", "unified_number"},
             "passwords": {username: plaintext password},
             "managers": {username: {"id", "desk_extension", "mobile"}}}.
    """
    county = session.scalar(select(County).where(County.code == COUNTY_CODE))
    if county is None:
        county = counties.create_county(session, None, "", code=COUNTY_CODE, name=COUNTY_NAME,
                                        fallback_strategy="ringall",
                                        numbers=[UNIFIED_NUMBER], primary=UNIFIED_NUMBER)
    passwords = {
        "admin": _user(session, accounts.create_user, username="admin",
                       display_name="系统管理员", role="admin", county_id=None),
        "supervisor": _user(session, accounts.create_user, username="supervisor",
                            display_name="赵县长", role="supervisor", county_id=county.id),
    }
    managers = {}
    for i, (username, display_name, employee_no, extension, mobile) in enumerate(MANAGERS):
        passwords[username] = _user(
            session, accounts.create_manager, username=username, display_name=display_name,
            county_id=county.id, employee_no=employee_no, desk_extension=extension,
            mobile=mobile)
        manager = session.scalar(select(Manager).join(User).where(User.username == username))
        _customers(session, county, manager, first=13700000001 + i * CUSTOMERS_PER_MANAGER)
        _tasks(session, county, manager)
        managers[username] = {"id": manager.id, "desk_extension": manager.desk_extension,
                              "mobile": manager.mobile}
    session.flush()
    return {"county": {"id": county.id, "code": county.code, "name": county.name,
                       "unified_number": county.primary_number},
            "passwords": passwords, "managers": managers}


def _user(session, create, *, username, **fields) -> str:
    """Create the user with a fresh password, or give the existing one a fresh password."""
    password = accounts.generate_password()
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        create(session, None, "", username=username, password=password, **fields)
    else:
        accounts.set_password(session, None, "", user, password)
    return password


def _customers(session, county, manager, first):
    names = "刘洋 陈静 杨磊 黄敏 周杰 吴婷 徐强 孙丽 马超".split()
    for k in range(CUSTOMERS_PER_MANAGER):
        phone = str(first + k)
        if session.scalar(select(Customer.id).where(Customer.phone == phone)) is not None:
            continue
        customer = Customer(phone=phone, name=names[(first + k) % len(names)],
                            county_id=county.id, manager_id=manager.id)
        session.add(customer)
        session.flush()
        session.add(CustomerAssignment(customer_id=customer.id, manager_id=manager.id,
                                       reason="import"))


def _tasks(session, county, manager):
    """A return-visit campaign with one open task per demo customer."""
    task_type = session.scalar(select(TaskType).where(TaskType.code == "revisit"))
    if task_type is None:
        task_type = TaskType(code="revisit", name="回访", description="客户满意度回访",
                             max_attempts=3, result_codes=[
                                 ResultCode(code=c, label=label, is_success=ok)
                                 for c, label, ok in RESULT_CODES])
        session.add(task_type)
        session.flush()
    campaign = session.scalar(select(Campaign).where(Campaign.county_id == county.id,
                                                     Campaign.task_type_id == task_type.id))
    if campaign is None:
        campaign = Campaign(county_id=county.id, task_type_id=task_type.id, name="示范回访活动",
                            status="active", starts_on=dt.date.today())
        session.add(campaign)
        session.flush()
    for customer in session.scalars(select(Customer).where(Customer.manager_id == manager.id)):
        exists = session.scalar(select(Task.id).where(Task.customer_id == customer.id,
                                                      Task.campaign_id == campaign.id))
        if exists is None:
            session.add(Task(campaign_id=campaign.id, task_type_id=task_type.id,
                             customer_id=customer.id, manager_id=manager.id,
                             max_attempts=task_type.max_attempts))
