"""Demo data: one county, its two unified numbers (a pool), an admin, a supervisor, three
customer managers with desk phones, a few customers, the standard task
types (回访, 营销, 调查) and a return-visit campaign ready to dial (its
tasks distributed to the three managers).

`seed` is idempotent: run twice, it creates nothing new, but it gives the
demo users fresh random passwords (they are stored only hashed, so the
demo can print working log-ins only by setting them again).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from khhf.models import Campaign, County, Customer, CustomerAssignment, Manager, TaskType, User
from khhf.services import accounts, campaigns, counties, distribution, number_pool

COUNTY_CODE = "demo"
COUNTY_NAME = "示范县"
UNIFIED_NUMBER = "13900000000"
# the county's pool: the primary (published) number, and a second one
POOL = (UNIFIED_NUMBER, "13900000002")
# the demo pool's caps: calls a day, an hour, at once (two numbers: six at once)
POOL_CAPS = {"daily_cap": 200, "hourly_cap": 40, "concurrent_cap": 3}
MANAGERS = (
    # username, display name, employee no, desk extension, mobile
    ("manager1", "张伟", "D001", "8001", "13800138001"),
    ("manager2", "王芳", "D002", "8002", "13800138002"),
    ("manager3", "李娜", "D003", "8003", "13800138003"),
)
CUSTOMERS_PER_MANAGER = 3
# the supervisor's desk phone: the live view's listen-in rings it
SUPERVISOR_DESK = "8900"
CAMPAIGN_NAME = "示范回访批次"


def seed(session: Session) -> dict:
    """Create the demo data if missing; the caller commits.

    Returns {"campaign": {"id", "name"},
             "county": {"id", "code", "name", "unified_number" (the primary),
                        "unified_numbers" (the pool)},
             "passwords": {username: plaintext password},
             "managers": {username: {"id", "desk_extension", "mobile"}},
             "supervisor_desk": the supervisor's desk extension}.
    """
    county = session.scalar(select(County).where(County.code == COUNTY_CODE))
    if county is None:
        county = counties.create_county(session, None, "", code=COUNTY_CODE, name=COUNTY_NAME,
                                        fallback_strategy="ringall",
                                        numbers=list(POOL), primary=UNIFIED_NUMBER)
        for number in county.unified_numbers:
            number_pool.set_caps(session, None, "", number, **POOL_CAPS)
    passwords = {
        "admin": _user(session, accounts.create_user, username="admin",
                       display_name="系统管理员", role="admin", county_id=None),
        "supervisor": _user(session, accounts.create_user, username="supervisor",
                            display_name="赵县长", role="supervisor", county_id=county.id),
    }
    supervisor = session.scalar(select(User).where(User.username == "supervisor"))
    if supervisor.desk_extension is None:
        accounts.set_desk_extension(session, None, "", supervisor, SUPERVISOR_DESK)
    managers = {}
    for i, (username, display_name, employee_no, extension, mobile) in enumerate(MANAGERS):
        passwords[username] = _user(
            session, accounts.create_manager, username=username, display_name=display_name,
            county_id=county.id, employee_no=employee_no, desk_extension=extension,
            mobile=mobile)
        manager = session.scalar(select(Manager).join(User).where(User.username == username))
        _customers(session, county, manager, first=13700000001 + i * CUSTOMERS_PER_MANAGER)
        managers[username] = {"id": manager.id, "desk_extension": manager.desk_extension,
                              "mobile": manager.mobile}
    session.flush()
    campaign = _campaign(session, county)
    return {"campaign": {"id": campaign.id, "name": campaign.name},
            "county": {"id": county.id, "code": county.code, "name": county.name,
                       "unified_number": county.primary_number,
                       "unified_numbers": sorted(n.number for n in county.unified_numbers)},
            "passwords": passwords, "managers": managers,
            "supervisor_desk": supervisor.desk_extension}


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


def _campaign(session, county) -> Campaign:
    """A one-week return-visit campaign, active, one task per demo customer,
    distributed automatically (each customer's own manager)."""
    campaigns.ensure_standard_types(session)
    campaign = session.scalar(select(Campaign).where(Campaign.county_id == county.id,
                                                     Campaign.name == CAMPAIGN_NAME))
    if campaign is None:
        revisit = session.scalar(select(TaskType).where(TaskType.code == "revisit"))
        today = dt.date.today()
        campaign = campaigns.create_campaign(
            session, None, "", county_id=county.id, task_type_id=revisit.id,
            name=CAMPAIGN_NAME, cycle="once", starts_on=today,
            ends_on=today + dt.timedelta(days=6))
        campaigns.activate(session, None, "", campaign, today=today)
        distribution.commit(session, None, "", campaign, "auto")
    return campaign
