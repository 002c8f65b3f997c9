"""A realistic, seeded CRM demo data set (English and German), generated as plain data.

`generate(seed, accounts, today)` returns the same structure as data.json —
entity -> list of records whose reference fields hold *keys* (an account's
name, a contact's e-mail, a deal's `_key`, ...) — and nothing else: no I/O,
so the same seed and day give the same records. The loader
(xrm.demo.loader) writes them through RecordService: `_then` lists the
updates that follow the create (a deal's stage or a ticket's status along
its state machine), `_convert` a lead conversion through the CRM pack.

Names come from the word lists below (written for this module), not from
../shared/data: those data sets state no licence we could confirm.

Dates: deals, activities, tickets and campaign responses spread over the two
years before `today`; closed deals carry `closed_at`, won and lost in every
month. Record system times (created_at, the audit trail) are when the demo
runs: they cannot be back-dated through the service layer.
"""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

__all__ = ["SIZES", "generate"]

SIZES: dict[str, int] = {"small": 25, "medium": 250, "large": 1500}
"""Generated accounts per size (besides the well-known records of data.json); the other entities scale with them."""

SLA_HOURS = {"urgent": (1, 8), "high": (4, 24), "normal": (8, 72), "low": (24, 120)}
"""As xrm.builtins.crm.SLA_HOURS (copied so that generating needs no plugin)."""

# -- word lists ------------------------------------------------------------------------------------
DE_FIRST = ("Max", "Erika", "Lukas", "Anna", "Jonas", "Lea", "Felix", "Laura", "Paul", "Sophie", "Leon", "Marie", "Tim",
            "Julia", "Jan", "Katharina", "Niklas", "Lisa", "Tobias", "Sarah", "Florian", "Hannah", "Stefan", "Sabine",
            "Thomas", "Andrea", "Michael", "Claudia", "Andreas", "Petra", "Jürgen", "Ute", "Matthias", "Birgit",
            "Sebastian", "Nina", "Christian", "Jana", "Martin", "Monika", "Dieter", "Helga", "Uwe", "Gabriele", "Frank",
            "Susanne", "Oliver", "Carina", "Björn", "Jörg", "Sören", "Anja", "Günther", "Dörte", "Kerstin", "Ralf")
DE_LAST = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
           "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
           "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier",
           "Lehmann", "Köhler", "Maier", "Herrmann", "König", "Walter", "Mayer", "Huber", "Kaiser", "Fuchs", "Peters",
           "Lang", "Scholz", "Möller", "Weiß", "Jung", "Hahn", "Vogel", "Friedrich", "Keller", "Günther", "Frank",
           "Berger", "Winkler", "Roth", "Beck", "Lorenz", "Baumann", "Franke", "Albrecht", "Schuster", "Simon",
           "Ludwig", "Böhm", "Winter", "Kraus", "Schumacher", "Krämer", "Vogt", "Stein", "Jäger", "Otto", "Sommer",
           "Groß", "Seidel", "Heinrich", "Brandt", "Haas", "Schreiber", "Graf", "Schulte", "Dietrich", "Ziegler",
           "Kuhn", "Kühn", "Pohl", "Engel", "Horn", "Busch", "Bergmann", "Voigt", "Sauer", "Arnold", "Pfeiffer")
EN_FIRST = ("James", "Olivia", "William", "Emma", "Oliver", "Amelia", "Jack", "Isla", "Harry", "Ava", "George", "Mia",
            "Noah", "Sophia", "Charlie", "Grace", "Thomas", "Emily", "Daniel", "Chloe", "Michael", "Sarah", "David",
            "Jessica", "Robert", "Jennifer", "John", "Linda", "Richard", "Patricia", "Kevin", "Megan", "Brian",
            "Laura", "Ethan", "Hannah", "Priya", "Raj", "Mei", "Wei", "Carlos", "Sofia", "Aisha", "Omar")
EN_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor", "Moore",
           "Martin", "Jackson", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young",
           "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell",
           "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker", "Collins", "Edwards", "Stewart", "Morris",
           "Murphy", "Cook", "Rogers", "Patel", "Khan", "Chen", "Nguyen", "Garcia", "O'Brien", "MacLeod")

# (city, state / Bundesland / canton, phone prefix): every Bundesland appears.
PLACES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "DE": (("Berlin", "Berlin", "+49 30"), ("Hamburg", "Hamburg", "+49 40"), ("München", "Bayern", "+49 89"),
           ("Köln", "Nordrhein-Westfalen", "+49 221"), ("Frankfurt am Main", "Hessen", "+49 69"),
           ("Stuttgart", "Baden-Württemberg", "+49 711"), ("Düsseldorf", "Nordrhein-Westfalen", "+49 211"),
           ("Leipzig", "Sachsen", "+49 341"), ("Dortmund", "Nordrhein-Westfalen", "+49 231"),
           ("Bremen", "Bremen", "+49 421"), ("Dresden", "Sachsen", "+49 351"), ("Hannover", "Niedersachsen", "+49 511"),
           ("Nürnberg", "Bayern", "+49 911"), ("Bielefeld", "Nordrhein-Westfalen", "+49 521"),
           ("Bonn", "Nordrhein-Westfalen", "+49 228"), ("Münster", "Nordrhein-Westfalen", "+49 251"),
           ("Mannheim", "Baden-Württemberg", "+49 621"), ("Karlsruhe", "Baden-Württemberg", "+49 721"),
           ("Augsburg", "Bayern", "+49 821"), ("Wiesbaden", "Hessen", "+49 611"), ("Mainz", "Rheinland-Pfalz", "+49 6131"),
           ("Trier", "Rheinland-Pfalz", "+49 651"), ("Kiel", "Schleswig-Holstein", "+49 431"),
           ("Lübeck", "Schleswig-Holstein", "+49 451"), ("Rostock", "Mecklenburg-Vorpommern", "+49 381"),
           ("Schwerin", "Mecklenburg-Vorpommern", "+49 385"), ("Erfurt", "Thüringen", "+49 361"),
           ("Jena", "Thüringen", "+49 3641"), ("Magdeburg", "Sachsen-Anhalt", "+49 391"),
           ("Halle (Saale)", "Sachsen-Anhalt", "+49 345"), ("Potsdam", "Brandenburg", "+49 331"),
           ("Cottbus", "Brandenburg", "+49 355"), ("Saarbrücken", "Saarland", "+49 681"),
           ("Freiburg im Breisgau", "Baden-Württemberg", "+49 761"), ("Regensburg", "Bayern", "+49 941"),
           ("Würzburg", "Bayern", "+49 931"), ("Ulm", "Baden-Württemberg", "+49 731"),
           ("Göttingen", "Niedersachsen", "+49 551"), ("Oldenburg", "Niedersachsen", "+49 441"),
           ("Chemnitz", "Sachsen", "+49 371")),
    "AT": (("Wien", "Wien", "+43 1"), ("Graz", "Steiermark", "+43 316"), ("Linz", "Oberösterreich", "+43 732"),
           ("Salzburg", "Salzburg", "+43 662"), ("Innsbruck", "Tirol", "+43 512")),
    "CH": (("Zürich", "Kanton Zürich", "+41 44"), ("Basel", "Kanton Basel-Stadt", "+41 61"), ("Bern", "Kanton Bern", "+41 31")),
    "UK": (("London", "England", "+44 20"), ("Manchester", "England", "+44 161"), ("Edinburgh", "Scotland", "+44 131")),
    "US": (("Chicago", "Illinois", "+1 312"), ("New York", "New York", "+1 212"), ("Boston", "Massachusetts", "+1 617"),
           ("Austin", "Texas", "+1 512"), ("Seattle", "Washington", "+1 206"), ("San Francisco", "California", "+1 415")),
}
COUNTRY_WEIGHTS = (("DE", 62), ("AT", 8), ("CH", 7), ("UK", 9), ("US", 14))
CURRENCY = {"DE": "EUR", "AT": "EUR", "CH": "CHF", "UK": "GBP", "US": "USD"}
GERMAN = ("DE", "AT", "CH")

# Company name patterns and their sector; {n} is a surname.
DE_COMPANIES = (("{n} GmbH", "services"), ("{n} & Söhne KG", "manufacturing"), ("{n} & Partner", "services"),
                ("Bäckerei {n}", "retail"), ("Autohaus {n}", "retail"), ("{n} Maschinenbau GmbH", "manufacturing"),
                ("{n} Logistik GmbH", "services"), ("{n} Elektrotechnik GmbH & Co. KG", "manufacturing"),
                ("{n} IT-Systeme GmbH", "technology"), ("Metzgerei {n}", "retail"), ("Steuerkanzlei {n}", "finance"),
                ("{n} Bau AG", "manufacturing"), ("Praxis Dr. {n}", "health"), ("{n} Möbelhaus", "retail"),
                ("Brauerei {n}", "manufacturing"), ("{n} Medizintechnik AG", "health"), ("{n} Software GmbH", "technology"),
                ("{n} Versicherungsmakler", "finance"), ("Pflegedienst {n}", "health"), ("{n} Feinkost e.K.", "retail"))
EN_COMPANIES = (("{n} Industries", "manufacturing"), ("{n} & Co.", "services"), ("{n} Logistics Ltd", "services"),
                ("{n} Software Inc.", "technology"), ("{n} Health Partners", "health"), ("{n} Consulting LLC", "services"),
                ("{n} Retail Group", "retail"), ("{n} Capital", "finance"), ("{n} Analytics", "technology"))
CLASSICS = (("Hooli", "technology", "US"), ("Wayne Enterprises", "manufacturing", "US"), ("Cyberdyne Systems", "technology", "US"),
            ("Soylent Corp", "manufacturing", "US"), ("Vandelay Industries", "retail", "US"), ("Dunder Mifflin", "retail", "US"),
            ("Massive Dynamic", "technology", "US"), ("Tyrell Corporation", "technology", "US"), ("Oscorp", "health", "US"),
            ("Sterling Cooper", "services", "US"), ("Gringotts Bank", "finance", "UK"), ("Schmidt & Söhne KG", "manufacturing", "DE"),
            ("Bäckerei Weber", "retail", "DE"), ("Hoffmann Feinmechanik GmbH", "manufacturing", "DE"))
SUBSIDIARY = {"DE": ("{b} Service GmbH", "{b} Nord GmbH", "{b} Süd GmbH", "{b} Austria GmbH", "{b} Schweiz AG"),
              "EN": ("{b} UK Ltd", "{b} Europe", "{b} Services", "{b} Canada Inc.")}
DE_TITLES = ("Geschäftsführer", "Geschäftsführerin", "Einkaufsleiter", "Einkaufsleiterin", "IT-Leiter", "Vertriebsleiterin",
             "Leiter Buchhaltung", "Prokurist", "Assistenz der Geschäftsführung", "Projektleiterin", "Inhaber", "Inhaberin",
             "Werkleiter", "Marketingleiterin")
EN_TITLES = ("CEO", "CFO", "CTO", "Head of Procurement", "IT Manager", "Sales Director", "Office Manager", "Project Lead",
             "Operations Manager", "Marketing Manager", "Founder")
DE_DEALS = ("Wartungsvertrag {y}", "Lizenzerweiterung", "Cloud-Migration", "Rahmenvertrag {y}", "Kassensysteme",
            "Schulungspaket", "Support Premium {y}", "Rollout Standort {c}", "Hardware-Erneuerung", "Digitalisierung Einkauf")
EN_DEALS = ("Renewal {y}", "Platform upgrade", "Licence expansion", "Analytics rollout", "Support contract {y}",
            "Onboarding {c} office", "Hardware refresh", "Pilot project")
LOST_REASONS = ("price", "competitor", "no_budget", "timing", "no_decision")
DE_TICKETS = ("Login funktioniert nicht", "Rechnung fehlerhaft", "Drucker im Lager offline", "Export bricht ab",
              "Neue Benutzer anlegen", "Synchronisation hängt", "Fehlermeldung beim Speichern", "Lieferung verspätet",
              "Passwort zurücksetzen", "Bericht zeigt falsche Summen", "Kassensystem startet nicht", "VPN-Verbindung bricht ab")
EN_TICKETS = ("Cannot log in", "Invoice shows the wrong amount", "Import fails with an error", "Add new users",
              "Sync is stuck", "Report totals look wrong", "Password reset", "Delivery is late", "Dashboard is slow")
DE_ACTIVITIES = {"call": ("Rückruf {n}", "Telefonat zum Angebot", "Bedarfsanalyse am Telefon"),
                 "email": ("Angebot an {n} senden", "Unterlagen nachreichen", "Terminbestätigung schicken"),
                 "meeting": ("Workshop bei {a}", "Präsentation bei {a}", "Jahresgespräch mit {n}"),
                 "task": ("Angebot {a} nachfassen", "Vertrag vorbereiten", "Referenzen zusammenstellen"),
                 "note": ("Notiz: {a} plant Budget für nächstes Jahr", "Notiz: Ansprechpartner wechselt")}
EN_ACTIVITIES = {"call": ("Call back {n}", "Discovery call", "Follow-up call on the quote"),
                 "email": ("Send the quote to {n}", "Send the reference list", "Confirm the meeting"),
                 "meeting": ("Workshop at {a}", "Demo for {a}", "Quarterly review with {n}"),
                 "task": ("Follow up the {a} quote", "Prepare the contract", "Collect references"),
                 "note": ("Note: {a} plans next year's budget", "Note: new decision maker")}
LEAD_SOURCES = (("web", 30), ("referral", 15), ("event", 15), ("campaign", 15), ("cold_call", 10), ("partner", 10), ("other", 5))
PRODUCTS = (("CRM Analytics Add-on", "XRM-ANALYTICS", "month", "29.00"), ("Mobile App Lizenz", "XRM-MOBILE", "month", "9.00"),
            ("Datenmigration", "SRV-MIGRATION", "day", "1100.00"), ("Schulung vor Ort", "SRV-TRAIN-DAY", "day", "950.00"),
            ("Integration Connector", "XRM-CONNECT", "licence", "2400.00"), ("Beratung", "SRV-CONSULT-H", "hour", "140.00"))


def _slug(text: str) -> str:
    text = text.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _money(amount: float | Decimal, currency: str) -> dict[str, Any]:
    return {"amount": Decimal(str(amount)).quantize(Decimal("0.01")), "currency": currency}


def _at(day: date, rng: random.Random, start_hour: int = 8, end_hour: int = 18) -> str:
    moment = datetime.combine(day, time(rng.randint(start_hour, end_hour - 1), rng.choice((0, 15, 30, 45))), tzinfo=UTC)
    return moment.isoformat()


class _Generator:
    def __init__(self, seed: int, accounts: int, today: date) -> None:
        self.rng = random.Random(seed)
        self.count = max(0, accounts)
        self.today = today
        self.out: dict[str, list[dict[str, Any]]] = {}
        self.names: set[str] = set()
        self.emails: set[str] = set()
        self.accounts: list[dict[str, Any]] = []
        self.contacts_of: dict[str, list[dict[str, Any]]] = {}
        self.won_deals_of: dict[str, list[str]] = {}

    def pick(self, weighted: tuple[tuple[Any, int], ...]) -> Any:
        return self.rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]

    def day_in_past(self, days: int, at_least: int = 0) -> date:
        return self.today - timedelta(days=self.rng.randint(at_least, days))

    def phone(self, prefix: str) -> str:
        return f"{prefix} {self.rng.randint(100000, 9999999)}"

    # -- accounts ----------------------------------------------------------------------------
    def account(self, name: str, sector: str, country: str, parent: str | None = None) -> dict[str, Any] | None:
        if name in self.names:
            return None
        self.names.add(name)
        city, region, prefix = self.rng.choice(PLACES[country])
        employees = int(self.rng.lognormvariate(4.2, 1.3)) + 3
        record: dict[str, Any] = {
            "name": name, "sector": sector, "city": city, "region": region, "employees": employees,
            "website": f"https://{_slug(name)}.example", "phone": self.phone(prefix),
            "annual_revenue": _money(round(employees * self.rng.uniform(60_000, 250_000), -3), CURRENCY[country]),
        }
        if self.rng.random() < 0.7:
            record["customer_since"] = self.day_in_past(3650, 30).isoformat()
        if parent:
            record["parent_account"] = parent
        if country in GERMAN and self.rng.random() < 0.1:
            record["notes"] = self.rng.choice(("Zahlt zuverlässig, bevorzugt Rechnungen per E-Mail.",
                                               "Beschwerden über Lieferzeiten im letzten Quartal.", "Entscheidet nur im Januar über Budgets."))
        self.accounts.append({"name": name, "country": country, "prefix": prefix, "city": city, "sector": sector,
                              "employees": employees})
        return record

    def gen_accounts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        classics = list(CLASSICS)
        while len(found) < self.count:
            if classics and self.rng.random() < 0.15:
                name, sector, country = classics.pop(0)
            else:
                country = self.pick(COUNTRY_WEIGHTS)
                pattern, sector = self.rng.choice(DE_COMPANIES if country in GERMAN else EN_COMPANIES)
                name = pattern.format(n=self.rng.choice(DE_LAST if country in GERMAN else EN_LAST))
            record = self.account(name, sector, country)
            if record is None:
                continue
            found.append(record)
            # About one company in eight is a group: subsidiaries (and now and then theirs) below it.
            if self.rng.random() < 0.12 and len(found) < self.count:
                base = re.sub(r" (GmbH & Co\. KG|GmbH|AG|KG|Inc\.|Ltd|LLC|e\.K\.)$", "", name)
                patterns = SUBSIDIARY["DE" if country in GERMAN else "EN"]
                for pattern in self.rng.sample(patterns, self.rng.randint(1, 2)):
                    child = self.account(pattern.format(b=base), sector, country, parent=name) if len(found) < self.count else None
                    if child is None:
                        continue
                    found.append(child)
                    if self.rng.random() < 0.3 and len(found) < self.count:
                        grandchild = self.account(f"{child['name']} Werk {self.rng.choice(('Ost', 'West', '2'))}"
                                                  if country in GERMAN else f"{child['name']} Plant 2", sector, country,
                                                  parent=child["name"])
                        if grandchild:
                            found.append(grandchild)
        return found

    # -- people --------------------------------------------------------------------------------
    def person(self, german: bool) -> tuple[str, str, str]:
        first = self.rng.choice(DE_FIRST if german else EN_FIRST)
        last = self.rng.choice(DE_LAST if german else EN_LAST)
        return first, last, f"{first} {last}"

    def email(self, first: str, last: str, domain: str) -> str:
        local = f"{_slug(first)}.{_slug(last)}".replace("-", "")
        address, n = f"{local}@{domain}", 2
        while address in self.emails:
            address, n = f"{local}{n}@{domain}", n + 1
        self.emails.add(address)
        return address

    def gen_contacts(self) -> list[dict[str, Any]]:
        found = []
        for account in self.accounts:
            german = account["country"] in GERMAN
            for _ in range(self.rng.choice((1, 1, 2, 2, 3, 4))):
                first, last, full = self.person(german)
                record: dict[str, Any] = {
                    "full_name": full, "email": self.email(first, last, f"{_slug(account['name'])}.example"),
                    "job_title": self.rng.choice(DE_TITLES if german else EN_TITLES), "account": account["name"],
                }
                if self.rng.random() < 0.6:
                    record["phone"] = self.phone(account["prefix"])
                for channel, chance in (("email", 0.55), ("phone", 0.25), ("letter", 0.1)):
                    if self.rng.random() < chance:
                        record[f"consent_{channel}"] = "granted" if self.rng.random() < 0.85 else "refused"
                        record[f"consent_{channel}_source"] = self.rng.choice(("web form", "Messe / trade fair", "phone call"))
                if self.rng.random() < 0.15:
                    record["birthday"] = date(self.rng.randint(1960, 1998), self.rng.randint(1, 12), self.rng.randint(1, 28)).isoformat()
                found.append(record)
                self.contacts_of.setdefault(account["name"], []).append(record)
        return found

    # -- deals ---------------------------------------------------------------------------------
    def gen_deals(self) -> list[dict[str, Any]]:
        found = []
        for account in self.accounts:
            german = account["country"] in GERMAN
            currency = CURRENCY[account["country"]]
            for _ in range(self.rng.choice((0, 1, 2, 2, 3, 4, 5))):
                # More deals lately (a growing business), so the pipeline holds open deals of every stage.
                start = self.today - timedelta(days=3 + int(727 * self.rng.random() ** 1.4))
                cycle = self.rng.randint(14, 150)
                end = start + timedelta(days=cycle)
                pattern = self.rng.choice(DE_DEALS if german else EN_DEALS)
                short = re.sub(r" (GmbH & Co\. KG|GmbH|AG|KG|Inc\.|Ltd|LLC|e\.K\.|Corporation|Corp)$", "", account["name"])
                title = f"{short} {pattern.format(y=end.year, c=account['city'])}"
                size = max(1.0, account["employees"] ** 0.6)
                amount = _money(max(500, round(self.rng.lognormvariate(8.0, 0.8) * size / 3, -2)), currency)
                contacts = self.contacts_of.get(account["name"]) or []
                key = f"deal:{len(found) + 1}"
                record: dict[str, Any] = {"_key": key, "title": title[:200], "account": account["name"], "stage": "prospecting",
                                          "probability": 10}
                if contacts:
                    record["contact"] = self.rng.choice(contacts)["email"]
                has_amount = self.rng.random() < 0.8
                if has_amount:
                    record["amount"] = amount
                steps: list[dict[str, Any]] = []
                if end < self.today:  # decided: won or lost, at the end of its cycle
                    reached = self.rng.choice((0, 1, 2, 2, 2)) if has_amount else self.rng.choice((0, 1))
                    won = has_amount and reached == 2 and self.rng.random() < 0.75
                    if won and "amount" not in record:
                        record["amount"] = amount
                    if reached >= 1 or won:
                        steps.append({"stage": "qualification", "probability": 30})
                    if reached >= 2 or won:
                        steps.append({"stage": "negotiation", "probability": 60})
                    closed = _at(end, self.rng)
                    record["close_date"] = end.isoformat()
                    if won:
                        steps.append({"stage": "won", "probability": 100, "closed_at": closed})
                        self.won_deals_of.setdefault(account["name"], []).append(key)
                    else:
                        steps.append({"stage": "lost", "probability": 0, "closed_at": closed,
                                      "details": {"lost_reason": self.rng.choice(LOST_REASONS)}})
                        if self.rng.random() < 0.05:  # reopened: back to the start of the pipeline
                            steps.append({"stage": "prospecting", "probability": 10, "closed_at": None,
                                          "close_date": (self.today + timedelta(days=self.rng.randint(30, 120))).isoformat()})
                else:  # open: the further along its cycle, the further along the pipeline
                    progress = (self.today - start).days / cycle
                    record["close_date"] = end.isoformat()
                    if progress > 0.3:
                        steps.append({"stage": "qualification", "probability": self.rng.choice((20, 25, 30, 40))})
                    if progress > 0.6 and has_amount:
                        steps.append({"stage": "negotiation", "probability": self.rng.choice((50, 60, 70, 80))})
                if steps:
                    record["_then"] = steps
                found.append(record)
        return found

    # -- leads ---------------------------------------------------------------------------------
    def gen_leads(self) -> list[dict[str, Any]]:
        found = []
        for _ in range(max(10, int(self.count * 0.8))):
            country = self.pick(COUNTRY_WEIGHTS)
            german = country in GERMAN
            first, last, full = self.person(german)
            pattern, _sector = self.rng.choice(DE_COMPANIES if german else EN_COMPANIES)
            company = pattern.format(n=self.rng.choice(DE_LAST if german else EN_LAST))
            if company in self.names:
                company = f"{company} {self.rng.choice(PLACES[country])[0]}"
            status = self.pick((("new", 25), ("contacted", 25), ("qualified", 20), ("lost", 15), ("converted", 15)))
            record: dict[str, Any] = {"name": full, "company": company, "email": self.email(first, last, f"{_slug(company)}.example"),
                                      "source": self.pick(LEAD_SOURCES), "status": "new" if status == "converted" else status}
            if self.rng.random() < 0.5:
                record["phone"] = self.phone(self.rng.choice(PLACES[country])[2])
            if status == "lost":
                record["notes"] = self.rng.choice(("Kein Budget vor nächstem Jahr.", "Hat sich für den Wettbewerb entschieden.",
                                                   "No budget this year.", "Went with a competitor."))
            if status == "converted" and company not in self.names:
                self.names.add(company)  # the conversion creates the account
                record["_convert"] = {"title": f"{company}: {'Erstauftrag' if german else 'First order'}",
                                      "amount": _money(round(self.rng.uniform(2000, 60000), -2), CURRENCY[country])}
                record["_deal"] = {"stage": self.rng.choice(("prospecting", "qualification", "negotiation")),
                                   "close_date": (self.today + timedelta(days=self.rng.randint(20, 120))).isoformat()}
            found.append(record)
        return found

    # -- activities ----------------------------------------------------------------------------
    def gen_activities(self, deals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        country = {a["name"]: a["country"] for a in self.accounts}
        for deal in deals:
            german = country[deal["account"]] in GERMAN
            contact = deal.get("contact")
            name = next((c["full_name"] for c in self.contacts_of.get(deal["account"], []) if c["email"] == contact), deal["account"])
            for _ in range(self.rng.randint(1, 4)):
                kind = self.pick((("call", 30), ("email", 30), ("meeting", 15), ("task", 20), ("note", 5)))
                due = self.today + timedelta(days=self.rng.randint(-700, 30))
                subject = self.rng.choice((DE_ACTIVITIES if german else EN_ACTIVITIES)[kind]).format(n=name, a=deal["account"])
                record: dict[str, Any] = {"kind": kind, "subject": subject[:200], "account": deal["account"], "deal": deal["_key"]}
                if contact:
                    record["contact"] = contact
                if kind != "note":
                    record["due"] = _at(due, self.rng)
                record["done"] = due < self.today and self.rng.random() < 0.85 or kind == "note"
                found.append(record)
        return found

    # -- tickets -------------------------------------------------------------------------------
    def gen_tickets(self) -> list[dict[str, Any]]:
        found = []
        for account in self.accounts:
            german = account["country"] in GERMAN
            contacts = self.contacts_of.get(account["name"]) or []
            for _ in range(self.rng.choice((0, 0, 1, 1, 2, 3))):
                priority = self.pick((("low", 20), ("normal", 45), ("high", 25), ("urgent", 10)))
                response_hours, resolution_hours = SLA_HOURS[priority]
                opened = datetime.combine(self.day_in_past(700), time(self.rng.randint(7, 19), self.rng.randint(0, 59)), tzinfo=UTC)
                age = (datetime.combine(self.today, time(12), tzinfo=UTC) - opened).total_seconds() / 3600
                record: dict[str, Any] = {
                    "subject": self.rng.choice(DE_TICKETS if german else EN_TICKETS), "priority": priority, "account": account["name"],
                    "sla_response_due": (opened + timedelta(hours=response_hours)).isoformat(),
                    "sla_resolution_due": (opened + timedelta(hours=resolution_hours)).isoformat(),
                }
                if contacts:
                    record["contact"] = self.rng.choice(contacts)["email"]
                # About one ticket in six misses its response time, one in five its resolution time.
                responded = response_hours * (self.rng.uniform(1.1, 3.0) if self.rng.random() < 0.17 else self.rng.uniform(0.05, 0.95))
                resolved = resolution_hours * (self.rng.uniform(1.1, 2.5) if self.rng.random() < 0.2 else self.rng.uniform(0.1, 0.95))
                steps: list[dict[str, Any]] = []
                if age > responded:
                    record["first_response_at"] = (opened + timedelta(hours=responded)).isoformat()
                    steps.append({"status": "open"})
                    if self.rng.random() < 0.3:
                        steps += [{"status": "waiting"}, {"status": "open"}]
                    if age > max(resolved, responded) and self.rng.random() < 0.93:
                        record["resolved_at"] = (opened + timedelta(hours=max(resolved, responded + 0.5))).isoformat()
                        steps.append({"status": "resolved"})
                        if age > resolved + 72:
                            steps.append({"status": "closed"})
                    elif self.rng.random() < 0.3:
                        steps.append({"status": "waiting"})
                if steps:
                    record["_then"] = steps
                found.append(record)
        return found

    # -- campaigns -----------------------------------------------------------------------------
    def gen_campaigns(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        t = self.today
        plans = (  # name, kind (mail or event), start days ago, length, status, budget
            (f"Newsletter Herbst {(t - timedelta(days=420)).year}", "mail", 420, 30, "completed", 4000),
            (f"Webinar: Digitalisierung im Mittelstand {(t - timedelta(days=250)).year}", "event", 250, 21, "completed", 6500),
            (f"Customer Summit {(t - timedelta(days=120)).year}", "event", 120, 45, "completed", 38000),
            (f"Jahresendaktion {t.year}", "mail", 20, 40, "active", 9000),
            (f"Product launch {(t + timedelta(days=45)).year}", "mail", -45, 30, "planned", 12000),
        )
        campaigns, members, responses = [], [], []
        reachable = [c for cs in self.contacts_of.values() for c in cs if c.get("consent_email") != "refused"]
        for name, kind, ago, length, status, budget in plans:
            start = t - timedelta(days=ago)
            campaigns.append({"name": name, "status": status, "start_date": start.isoformat(),
                              "end_date": (start + timedelta(days=length)).isoformat(), "budget": _money(budget, "EUR"),
                              "description": "Einladung per E-Mail an Bestandskunden." if kind == "mail" else
                              "Event with registration; invitations by e-mail."})
            if status == "planned" or not reachable:
                continue
            chosen = self.rng.sample(reachable, min(len(reachable), max(5, int(len(reachable) * self.rng.uniform(0.25, 0.45)))))
            for contact in chosen:
                member_key = f"{name}|{contact['email']}"
                funnel = self._funnel(kind, start, min(t, start + timedelta(days=length)))
                status_of = ("converted" if any(k == "purchased" for k, _, _ in funnel) else
                             "declined" if any(k == "unsubscribed" for k, _, _ in funnel) else
                             "responded" if funnel else "invited")
                members.append({"_key": member_key, "campaign": name, "contact": contact["email"], "status": status_of})
                for response_kind, moment, channel in funnel:
                    response: dict[str, Any] = {"campaign": name, "member": member_key, "contact": contact["email"],
                                                "kind": response_kind, "responded_at": moment, "channel": channel}
                    won = self.won_deals_of.get(contact["account"]) if response_kind == "purchased" else None
                    if won:
                        response["deal"] = self.rng.choice(won)
                    responses.append(response)
        return campaigns, members, responses

    def _funnel(self, kind: str, start: date, end: date) -> list[tuple[str, str, str]]:
        """The responses of one member: each step of the funnel with a falling chance, in time order."""
        span = max(1, (end - start).days)
        day = start + timedelta(days=self.rng.randint(0, min(span, 7)))
        steps = ((("opened", 0.45, "email"), ("clicked", 0.4, "web"), ("replied", 0.2, "email"), ("purchased", 0.15, "web"))
                 if kind == "mail" else
                 (("opened", 0.5, "email"), ("registered", 0.45, "web"), ("attended", 0.7, "event"), ("purchased", 0.12, "event")))
        found: list[tuple[str, str, str]] = []
        for name, chance, channel in steps:
            if self.rng.random() >= chance:
                break
            found.append((name, _at(min(day, end), self.rng), channel))
            day += timedelta(days=self.rng.randint(0, 3))
        if self.rng.random() < 0.04:
            found.append(("unsubscribed", _at(min(day, end), self.rng), "email"))
        return found

    # -- products ----------------------------------------------------------------------------
    def gen_products(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        products = [{"name": name, "sku": sku, "unit": unit} for name, sku, unit, _ in PRODUCTS]
        year = self.today.year
        lists = [{"name": f"Standard EUR {year - 1}", "currency": "EUR", "valid_from": f"{year - 1}-01-01", "valid_until": f"{year - 1}-12-31"},
                 {"name": f"Standard CHF {year}", "currency": "CHF", "valid_from": f"{year}-01-01", "valid_until": f"{year}-12-31"}]
        items = []
        for name, sku, _unit, price in PRODUCTS:
            base = Decimal(price)
            items.append({"label": f"{name} (EUR {year - 1})", "price_list": lists[0]["name"], "product": sku,
                          "unit_price": _money(base * Decimal("0.95"), "EUR")})
            items.append({"label": f"{name} (CHF)", "price_list": lists[1]["name"], "product": sku,
                          "unit_price": _money(base * Decimal("1.05"), "CHF")})
        return products, lists, items

    def run(self, reserved_names: set[str], reserved_emails: set[str]) -> dict[str, list[dict[str, Any]]]:
        self.names |= reserved_names
        self.emails |= reserved_emails
        if not self.count:  # --accounts 0: the well-known records only
            return {}
        accounts = self.gen_accounts()
        contacts = self.gen_contacts()
        deals = self.gen_deals()
        leads = self.gen_leads()
        activities = self.gen_activities(deals)
        tickets = self.gen_tickets()
        campaigns, members, responses = self.gen_campaigns()
        products, price_lists, items = self.gen_products()
        return {"account": accounts, "contact": contacts, "deal": deals, "lead": leads, "activity": activities, "ticket": tickets,
                "campaign": campaigns, "campaign_member": members, "campaign_response": responses, "product": products,
                "price_list": price_lists, "price_list_item": items}


def generate(seed: int, accounts: int, today: date | None = None, *, reserved_names: set[str] | None = None,
             reserved_emails: set[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The generated records for `accounts` accounts, the same for the same seed and day.

    `reserved_names` / `reserved_emails`: account names and e-mail addresses
    already taken (the well-known records), never generated again.
    """
    return _Generator(seed, accounts, today or date.today()).run(reserved_names or set(), reserved_emails or set())
