"""Keep survey link tokens out of the logs: a log filter that masks the token in ``/s/<token>/`` paths."""

import logging
import re

TOKEN_IN_PATH = re.compile(r"(/s/(?:unsubscribe/)?)[^/\s\"'?]+")


class RedactSurveyTokens(logging.Filter):
    """Replace the token of every public survey URL in a log record's message by ``…``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/s/" in message:
            record.msg = TOKEN_IN_PATH.sub(r"\1…", message)
            record.args = ()
        return True
