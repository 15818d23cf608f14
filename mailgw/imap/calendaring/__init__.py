"""Calendaring: meeting requests shown with a link to answer them on the web front end (issue 16).

`present(raw, settings, where)` is the whole feature as a pure function (bytes in, bytes out, None
when the message is left as stored); `Presenter` is one virtual server's settings and cache, and
`Presentation` the form one selection shows, which `mailgw.imap.fetch.MessageData` asks.
"""

from mailgw.imap.calendaring.link import PATH_FIELDS, CalendarSettings, Where, link
from mailgw.imap.calendaring.present import Recipe, plan, present
from mailgw.imap.calendaring.view import Presentation, Presenter

__all__ = ["CalendarSettings", "PATH_FIELDS", "Presentation", "Presenter", "Recipe", "Where", "link", "plan", "present"]
