"""The default surveys' texts and scales (written by ``surveys.services.default_surveys_seed``).
``{company}`` in a text is replaced by the company name when shown."""

NPS_TEXTS = {
    "question_en": "How likely is it that you would recommend {company} to a friend or colleague?",
    "question_zh_hans": "您有多大可能向朋友或同事推荐{company}？",
    "followup_negative_en": "What is the main reason for your score?",
    "followup_negative_zh_hans": "您给出这个分数的主要原因是什么？",
    "followup_neutral_en": "What would have made it a 9 or 10?",
    "followup_neutral_zh_hans": "我们怎样做才能让您打 9 分或 10 分？",
    "followup_positive_en": "What do you value most about {company}?",
    "followup_positive_zh_hans": "您最看重{company}的哪一点？",
    "label_low_en": "Not at all likely",
    "label_low_zh_hans": "完全不可能",
    "label_high_en": "Extremely likely",
    "label_high_zh_hans": "极有可能",
}
CES_TEXTS = {
    "question_en": "How much do you agree: {company} made it easy for me to handle my issue.",
    "question_zh_hans": "您在多大程度上同意：{company}让我轻松解决了问题。",
    "followup_negative_en": "What made it difficult? How could we make it easier for you?",
    "followup_negative_zh_hans": "是什么让问题难以解决？我们怎样才能让您更轻松？",
    "followup_neutral_en": "How could we make it easier for you?",
    "followup_neutral_zh_hans": "我们怎样才能让您更轻松？",
    "followup_positive_en": "What made it easy for you?",
    "followup_positive_zh_hans": "是什么让您觉得轻松？",
    "label_low_en": "Strongly disagree",
    "label_low_zh_hans": "非常不同意",
    "label_high_en": "Strongly agree",
    "label_high_zh_hans": "非常同意",
}
CSAT_TICKET_TEXTS = {
    "question_en": "How satisfied were you with the support you received from {company}?",
    "question_zh_hans": "您对{company}提供的支持服务满意吗？",
    "followup_negative_en": "We are sorry. What went wrong?",
    "followup_negative_zh_hans": "非常抱歉。哪里出了问题？",
    "followup_neutral_en": "Is there anything we can do to improve your experience?",
    "followup_neutral_zh_hans": "我们能做些什么来改善您的体验吗？",
    "followup_positive_en": "What did you like most?",
    "followup_positive_zh_hans": "您最满意的是哪一点？",
    "label_low_en": "Very dissatisfied",
    "label_low_zh_hans": "非常不满意",
    "label_high_en": "Very satisfied",
    "label_high_zh_hans": "非常满意",
}
CSAT_CAMPAIGN_TEXTS = {
    **CSAT_TICKET_TEXTS,
    "question_en": "Overall, how satisfied are you with {company}?",
    "question_zh_hans": "总体而言，您对{company}满意吗？",
}

SCALES = {"nps": (0, 10, 6, 9), "ces": (1, 7, 3, 5), "csat": (1, 5, 2, 4)}

DEFAULT_SURVEYS = [
    # name, kind, nps type, trigger, window days, cadence days, active, texts
    ("Relationship NPS", "nps", "relationship", "periodic", 30, 90, True, NPS_TEXTS),
    ("Support effort (CES)", "ces", "", "ticket_solved", 14, 7, True, CES_TEXTS),
    ("Support satisfaction (CSAT)", "csat", "", "ticket_solved", 14, 7, False, CSAT_TICKET_TEXTS),
    ("NPS campaign", "nps", "relationship", "manual", 30, 90, True, NPS_TEXTS),
    ("Satisfaction campaign (CSAT)", "csat", "", "manual", 14, 30, True, CSAT_CAMPAIGN_TEXTS),
]
