"""The importable fields of customers, deals and tickets, their header synonyms (English and Chinese),
and the guess of a column mapping from a file's header row.

Besides the built-in fields, each active custom field of the record type is a column target named
``custom.<key>``, shown with its label; a column headed with its key or its English or Chinese label maps
to it.
"""

from collections.abc import Sequence

from django.conf import settings
from django.utils import translation
from django.utils.functional import lazy
from django.utils.translation import gettext_lazy

from accounts.models import User
from crm.custom_fields import services as custom_fields
from crm.custom_fields.models import CustomField
from crm.data.imports import campaigns
from crm.data.imports.cells import (
    ImportField,
    _amount,
    _choice,
    _custom,
    _customer_ref,
    _date,
    _email,
    _id,
    _languages,
    _past_day,
    _percent,
    _stage,
    _text,
    _user,
    normalize_header,
)
from crm.models import Customer, Deal, ForecastCategory, ImportJob, Source, Ticket

MANAGERS_AND_REPS = (User.Role.REP, User.Role.MANAGER, User.Role.ADMIN)
SUPPORT = (User.Role.AGENT, User.Role.MANAGER, User.Role.ADMIN)
ID_SYNONYMS = ("id", "recordid", "编号", "序号", "记录编号")
OWNER_SYNONYMS = (
    "owner",
    "accountowner",
    "rep",
    "salesrep",
    "salesperson",
    "负责人",
    "所有者",
    "销售",
    "销售员",
)
SOURCE_SYNONYMS = ("source", "leadsource", "channel", "来源", "渠道", "客户来源")
CUSTOMER_REF_SYNONYMS = (
    "customer",
    "customername",
    "company",
    "companyname",
    "account",
    "customeremail",
    "客户",
    "客户名称",
    "公司",
    "公司名称",
)
CREATED_SYNONYMS = (
    "created",
    "createdat",
    "createdon",
    "createddate",
    "creationdate",
    "创建日期",
    "创建时间",
)

FIELDS: dict[str, tuple[ImportField, ...]] = {
    ImportJob.Kind.CUSTOMERS: (
        ImportField(
            "id",
            gettext_lazy("ID (from an export)"),
            _id,
            synonyms=(*ID_SYNONYMS, "customerid", "客户编号"),
            help=gettext_lazy("Matches existing customers exactly; leave empty for new ones."),
        ),
        ImportField(
            "name",
            gettext_lazy("Name"),
            _text(200),
            required=True,
            synonyms=(
                "name",
                "company",
                "companyname",
                "customer",
                "customername",
                "account",
                "accountname",
                "organisation",
                "organization",
                "firma",
                "名称",
                "客户名称",
                "公司",
                "公司名称",
                "客户",
                "姓名",
            ),
            example="Nordlicht Solar GmbH",
        ),
        ImportField(
            "kind",
            gettext_lazy("Kind"),
            _choice(Customer.Kind.choices),
            synonyms=("kind", "type", "customertype", "类型", "客户类型"),
            example="company",
        ),
        ImportField(
            "email",
            gettext_lazy("E-mail"),
            _email,
            synonyms=("email", "emailaddress", "mail", "邮箱", "电子邮件", "电子邮箱", "邮件", "邮箱地址"),
            example="info@nordlicht.example",
        ),
        ImportField(
            "phone",
            gettext_lazy("Phone"),
            _text(40),
            synonyms=(
                "phone",
                "phonenumber",
                "telephone",
                "tel",
                "mobile",
                "telefon",
                "电话",
                "手机",
                "联系电话",
                "电话号码",
                "手机号",
                "手机号码",
            ),
            example="+49 40 1234567",
        ),
        ImportField(
            "industry",
            gettext_lazy("Industry"),
            _text(100),
            synonyms=("industry", "sector", "branche", "行业", "所属行业"),
            example="Energy",
        ),
        ImportField(
            "city",
            gettext_lazy("City"),
            _text(100),
            synonyms=("city", "town", "ort", "stadt", "城市"),
            example="Hamburg",
        ),
        ImportField(
            "segment",
            gettext_lazy("Segment"),
            _choice(Customer.Segment.choices),
            synonyms=("segment", "size", "customersegment", "细分", "客户细分", "规模"),
            example="smb",
        ),
        ImportField(
            "language",
            gettext_lazy("Language"),
            _choice(settings.LANGUAGES),
            synonyms=("language", "lang", "语言"),
            example="en",
        ),
        ImportField(
            "source",
            gettext_lazy("Source"),
            _choice(Source.choices),
            synonyms=SOURCE_SYNONYMS,
            example="referral",
        ),
        ImportField("owner", gettext_lazy("Owner"), _user(*MANAGERS_AND_REPS), synonyms=OWNER_SYNONYMS),
        campaigns.CAMPAIGN_COLUMN,
        ImportField(
            "status",
            gettext_lazy("Status"),
            _choice(Customer.Status.choices),
            synonyms=("status", "customerstatus", "状态", "客户状态"),
            example="lead",
        ),
    ),
    ImportJob.Kind.DEALS: (
        ImportField(
            "id",
            gettext_lazy("ID (from an export)"),
            _id,
            synonyms=(*ID_SYNONYMS, "dealid"),
            help=gettext_lazy("Updates that deal; leave empty for new deals."),
        ),
        ImportField(
            "title",
            gettext_lazy("Title"),
            _text(200),
            required=True,
            synonyms=(
                "title",
                "deal",
                "dealname",
                "dealtitle",
                "opportunity",
                "name",
                "标题",
                "商机",
                "商机名称",
                "交易名称",
            ),
            example="Rooftop installation",
        ),
        ImportField(
            "customer",
            gettext_lazy("Customer"),
            _customer_ref,
            required=True,
            synonyms=CUSTOMER_REF_SYNONYMS,
            example="info@nordlicht.example",
            help=gettext_lazy("The customer's e-mail, phone or exact name."),
        ),
        ImportField(
            "amount",
            gettext_lazy("Amount"),
            _amount,
            synonyms=("amount", "value", "dealvalue", "dealamount", "金额", "价值", "金额元"),
            example="48000",
        ),
        ImportField(
            "kind",
            gettext_lazy("Kind"),
            _choice(
                Deal.Kind.choices, extra={"new": ("新", "新业务"), "renewal": ("续约",), "upsell": ("增购",)}
            ),
            synonyms=("kind", "type", "dealtype", "类型"),
            example="new",
        ),
        ImportField(
            "stage",
            gettext_lazy("Stage"),
            _stage,
            synonyms=("stage", "dealstage", "pipelinestage", "阶段", "销售阶段"),
            example="Qualified",
        ),
        ImportField(
            "probability",
            gettext_lazy("Probability %"),
            _percent,
            synonyms=("probability", "probabilitypercent", "winprobability", "概率", "赢单率", "成交概率"),
        ),
        ImportField(
            "forecast_category",
            gettext_lazy("Forecast category"),
            _choice(
                ForecastCategory.choices,
                extra={
                    "commit": ("committed", "承诺", "确定"),
                    "best_case": ("bestcase", "upside", "最佳情况", "乐观"),
                    "pipeline": ("管道", "储备"),
                    "omitted": ("omit", "excluded", "省略", "排除"),
                },
            ),
            synonyms=("forecastcategory", "forecast", "预测类别", "预测分类"),
            example="commit",
            help=gettext_lazy("Commit, best case, pipeline or omitted; empty: the stage's category."),
        ),
        ImportField(
            "source",
            gettext_lazy("Source"),
            _choice(Source.choices),
            synonyms=SOURCE_SYNONYMS,
            example="referral",
        ),
        ImportField(
            "expected_close_date",
            gettext_lazy("Expected close date"),
            _date,
            synonyms=(
                "expectedclosedate",
                "closedate",
                "expectedclose",
                "预计成交日期",
                "预计关闭日期",
                "预计成交时间",
            ),
            example="2026-09-30",
        ),
        ImportField("owner", gettext_lazy("Owner"), _user(*MANAGERS_AND_REPS), synonyms=OWNER_SYNONYMS),
        campaigns.CAMPAIGN_COLUMN,
        ImportField(
            "lost_reason",
            gettext_lazy("Lost reason"),
            _text(200),
            synonyms=("lostreason", "reasonlost", "丢单原因", "输单原因"),
        ),
        ImportField("created_at", gettext_lazy("Created on"), _past_day, synonyms=CREATED_SYNONYMS),
        ImportField(
            "closed_at",
            gettext_lazy("Closed on"),
            _past_day,
            synonyms=("closedat", "closedon", "actualclosedate", "wonon", "成交日期", "关闭日期", "赢单日期"),
            help=gettext_lazy("For won or lost deals."),
        ),
    ),
    ImportJob.Kind.TICKETS: (
        ImportField(
            "subject",
            gettext_lazy("Subject"),
            _text(200),
            required=True,
            synonyms=("subject", "title", "summary", "主题", "标题", "问题"),
            example="Invoice shows wrong VAT",
        ),
        ImportField(
            "customer",
            gettext_lazy("Customer"),
            _customer_ref,
            required=True,
            synonyms=CUSTOMER_REF_SYNONYMS,
            example="info@nordlicht.example",
            help=gettext_lazy("The customer's e-mail, phone or exact name."),
        ),
        ImportField(
            "description",
            gettext_lazy("Description"),
            _text(20000),
            synonyms=("description", "details", "body", "message", "描述", "内容", "详情", "问题描述"),
            example="The invoice of March shows 16% VAT instead of 19%.",
        ),
        ImportField(
            "priority",
            gettext_lazy("Priority"),
            _choice(
                Ticket.Priority.choices,
                extra={"urgent": ("紧急",), "high": ("高",), "normal": ("普通", "中"), "low": ("低",)},
            ),
            synonyms=("priority", "优先级"),
            example="normal",
        ),
        ImportField(
            "category",
            gettext_lazy("Category"),
            _choice(Ticket.Category.choices),
            synonyms=("category", "type", "tickettype", "类别", "分类", "类型"),
            example="problem",
        ),
        ImportField(
            "channel",
            gettext_lazy("Channel"),
            _choice(Ticket.Channel.choices),
            synonyms=("channel", "渠道"),
            example="email",
        ),
        ImportField(
            "status",
            gettext_lazy("Status"),
            _choice(
                Ticket.Status.choices,
                extra={"solved": ("resolved", "已解决"), "closed": ("已关闭",), "new": ("新建",)},
            ),
            synonyms=("status", "ticketstatus", "状态"),
            example="new",
        ),
        ImportField(
            "assignee",
            gettext_lazy("Assignee"),
            _user(*SUPPORT),
            synonyms=("assignee", "agent", "assignedto", "处理人", "受理人", "负责人"),
        ),
        ImportField("created_at", gettext_lazy("Created on"), _past_day, synonyms=CREATED_SYNONYMS),
        ImportField(
            "solved_at",
            gettext_lazy("Solved on"),
            _past_day,
            synonyms=("solvedat", "solvedon", "resolvedat", "resolvedon", "解决时间", "解决日期"),
        ),
    ),
    ImportJob.Kind.CAMPAIGNS: campaigns.FIELDS,
}


CUSTOM_PREFIX = "custom."
ENTITIES = {
    ImportJob.Kind.CUSTOMERS: CustomField.Entity.CUSTOMER,
    ImportJob.Kind.DEALS: CustomField.Entity.DEAL,
    ImportJob.Kind.TICKETS: CustomField.Entity.TICKET,
}


def import_fields(kind: str) -> tuple[ImportField, ...]:
    """The built-in fields of ``kind``, then its active custom fields (one query; campaigns have none)."""
    if kind not in ENTITIES:
        return FIELDS[kind]
    return FIELDS[kind] + tuple(_custom_field(field) for field in custom_fields.fields_of(ENTITIES[kind]))


def _custom_field(field: CustomField) -> ImportField:
    """A custom field as a column target. Required when it is always required (a deal field required
    from a stage on is checked against the row's stage when the rows are planned)."""
    example = ""
    if field.is_choice and field.choices:
        example = field.choices[0].get("en") or field.choices[0]["key"]
    return ImportField(
        f"{CUSTOM_PREFIX}{field.key}",
        lazy(lambda: field.label, str)(),
        _custom(field),
        required=field.required and field.required_from_stage_id is None,
        synonyms=tuple(word for word in (field.key, field.label_en, field.label_zh) if word),
        example=example,
        help=field.help,
        custom=field,
    )


def has_date_fields(kind: str) -> bool:
    """Whether the date order (3/1/2026) matters for this kind of import."""
    return any(
        f.convert in (_date, _past_day) or (f.custom is not None and f.custom.kind == CustomField.Kind.DATE)
        for f in import_fields(kind)
    )


def modes_for(kind: str) -> list[str]:
    """Tickets can only be created; customers and deals can also be updated."""
    if kind == ImportJob.Kind.TICKETS:
        return [ImportJob.Mode.CREATE]
    return list(ImportJob.Mode.values)


def guess_mapping(
    kind: str, headers: Sequence[str], remembered: dict[str, str] | None = None
) -> dict[str, str]:
    """Column index (as text) → field name, from the user's last mapping, then English and Chinese
    synonyms and the field labels; each field is used at most once, unknown columns stay unmapped."""
    fields = import_fields(kind)
    by_word: dict[str, str] = {}
    # A built-in field's own name first, then a custom field's key and labels (the company's own words),
    # then the built-in synonyms and labels.
    for f in fields:
        if f.custom is None:
            by_word.setdefault(normalize_header(f.name), f.name)
    for f in fields:
        if f.custom is not None:
            for word in f.synonyms:
                by_word.setdefault(normalize_header(word), f.name)
    for f in fields:
        for word in f.synonyms if f.custom is None else ():
            by_word.setdefault(normalize_header(word), f.name)
        for language in _languages():
            with translation.override(language):
                by_word.setdefault(normalize_header(str(f.label)), f.name)
    valid = {f.name for f in fields}
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for index, header in enumerate(headers):
        key = normalize_header(header)
        if remembered and key in remembered:
            name = remembered[key]
            if name in valid and name not in used:
                mapping[str(index)] = name
                used.add(name)
            continue
        name = by_word.get(key)
        if name and name not in used:
            mapping[str(index)] = name
            used.add(name)
    return mapping


# Row plans: clean, match, decide
