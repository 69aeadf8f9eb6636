"""Deterministic sample e-commerce marketing warehouse for the reverse-ETL sandbox.

Builds a DuckDB file (and optionally copies it into PostgreSQL) that looks like a small
marketing warehouse: customers from eleven countries, a product catalogue, orders and their
lines, web events, coupons and referral contacts. The same seed, size and anchor always give
the same data; no value depends on the wall clock. Customers are generated in chunks of
100,000 from their own random stream, so ``--only customers`` yields exactly the customers
of the full build.

Usage::

    python -m sandbox.warehouse --path data/warehouse.duckdb --customers 10000 --seed 42 \
        [--anchor 2026-11-01] [--only customers] [--postgres postgresql://u@127.0.0.1:5432/db \
        [--schema retl_src]] [--force]

Tables (every table has ``updated_at TIMESTAMP NOT NULL`` and a nullable soft-delete
``deleted_at TIMESTAMP``; there are no primary-key constraints):

- ``customers`` (key ``customer_id``, 1..N): email, E.164 phone, names, birth_date, gender
  ('F', 'M', 'U'), 2-letter language, address, ISO country_code, four consents
  ('GRANTED', 'DENIED', 'UNKNOWN'), loyalty_points, company, created_at.
- ``products`` (key ``product_id`` like 'P000123'; max(200, customers / 20) rows): sku, name,
  description (up to ~800 chars), brand, category, sub_category, price_cents (EUR), url,
  image_url, color, season, in_stock, stock_units, created_at.
- ``orders`` (key ``order_id`` like 'O0000001'; 2 per customer): customer_id, status
  ('CREATED', 'PAID', 'CANCELED', 'FULFILLED'), currency of the customer's country,
  total_cents = sum(quantity * unit_price_cents) - discount_cents, coupon_code, ordered_at.
  Amounts are in hundredths of the currency (JPY too), converted from EUR at fixed rates.
- ``order_items`` (key ``order_id``, ``line_no``; 1..4 lines per order): product_id,
  quantity, unit_price_cents (order currency); shares its order's updated_at/deleted_at.
- ``events`` (key ``event_id``, a UUID; 5 per customer): event_type ('page_view',
  'product_view', 'add_to_cart', 'checkout', 'login', 'search'), product_id, url,
  session_id, value_cents (EUR), occurred_at.
- ``coupon_sets`` (key ``coupon_set_id`` 'CS001'..'CS010'): discount_type ('PERCENT' in
  percent, 'AMOUNT' in EUR cents), discount_value, valid_from, valid_to.
- ``coupons`` (key ``coupon_code``; about 1 per customer): status 'REDEEMED' for every code
  used by an order, otherwise 'NEW' (no customer_id) or 'ASSIGNED'.
- ``referral_contacts`` (key ``referral_id`` like 'R00000001'; 1 per 2 customers): email,
  names, phone, language, referrer_code, referred_by (another contact's referrer_code),
  loyalty_card.
- ``dq_injected_defects(table_name, record_key, defect)``: one row per injected defect;
  record_key is the table's key as text (a duplicated key is listed once).

Time: ``updated_at`` is uniform over [anchor - 30 days, anchor); ``created_at`` and
``ordered_at`` are never after ``updated_at`` (but for the ``future_order_date`` defect). About 1% of customers, products, orders and
referral contacts (0.5% of coupons, 0.2% of events) are soft-deleted with
``deleted_at = updated_at``. A one-day window therefore holds about 1/30 of every table.

Non-Latin text (Cyrillic for UA, Greek for GR, Chinese for CN, Japanese for JP) and
apostrophes in names (O'Brien) are valid data, not defects.

Injected defects (about 3.6% of customers, 4.6% of products, 0.7% of orders, 3.5% of referral
contacts; every kind has at least 2 rows per 100,000-customer chunk). A row carries at most
one defect and is never soft-deleted:

- ``invalid_email``: 'anna.nowak12@', 'anna.nowak12.wp.pl', 'an na.nowak12@wp.pl'
  (customers, referral_contacts).
- ``missing_email``: email is NULL (customers, referral_contacts).
- ``lowercase_enum``: one consent column or country_code in lower case (customers);
  status in lower case (orders).
- ``duplicate_key``: a second row with the same key, a later updated_at and slightly
  different values (customers: loyalty_points, email_marketing_consent; products:
  price_cents, stock_units; referral_contacts: phone, loyalty_card).
- ``overlong_field``: first_name or last_name of 300+ chars (customers); name over 120 chars
  or product_id over 32 chars (products, the long id is the record_key).
- ``embedded_newline``: a newline in customers.address_line1, products.description or
  referral_contacts.last_name.
- ``embedded_quote``: a double quote and a semicolon in customers.last_name.
- ``negative_price``: products.price_cents < 0.
- ``blank_email``: customers.email of spaces or a tab (present, but blank).
- ``implausible_birthdate``: customers.birth_date of 0001-01-01, 9999-12-31, 1850-06-15 or 2099-01-01.
- ``overlong_address``: customers.address_line2 of 10,000 characters.
- ``blank_required``: products.description or brand of '' or spaces.
- ``future_order_date``: orders.ordered_at 90 days after the anchor, so after
  ``updated_at`` and after any window that holds the order.
- ``blank_name``: referral_contacts.first_name or last_name of '' or spaces.

Orders, order lines and events reference only products without a defect in price or id.
"""

from __future__ import annotations

import argparse
import functools
import io
import string
import sys
import time
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

CHUNK_ROWS = 100_000
DEFAULT_ANCHOR = date(2026, 11, 1)
DAY_US = 86_400 * 1_000_000
SPAN_US = 30 * DAY_US
YEAR_US = 365 * DAY_US

_STAMPS = "updated_at TIMESTAMP NOT NULL, deleted_at TIMESTAMP"
TABLES: dict[str, str] = {  # column definitions in DuckDB types, in table order
    "customers": "customer_id BIGINT, email VARCHAR, phone VARCHAR, first_name VARCHAR, last_name VARCHAR, "
    "birth_date DATE, gender VARCHAR, language VARCHAR, address_line1 VARCHAR, address_line2 VARCHAR, "
    "city VARCHAR, postal_code VARCHAR, region VARCHAR, country_code VARCHAR, "
    "email_marketing_consent VARCHAR, email_transactional_consent VARCHAR, sms_marketing_consent VARCHAR, "
    "sms_transactional_consent VARCHAR, loyalty_points INTEGER, company VARCHAR, "
    f"created_at TIMESTAMP, {_STAMPS}",
    "products": "product_id VARCHAR, sku VARCHAR, name VARCHAR, description VARCHAR, brand VARCHAR, "
    "category VARCHAR, sub_category VARCHAR, price_cents INTEGER, currency VARCHAR, url VARCHAR, "
    "image_url VARCHAR, color VARCHAR, season VARCHAR, in_stock BOOLEAN, stock_units INTEGER, "
    f"created_at TIMESTAMP, {_STAMPS}",
    "orders": "order_id VARCHAR, customer_id BIGINT, status VARCHAR, currency VARCHAR, total_cents INTEGER, "
    f"discount_cents INTEGER, coupon_code VARCHAR, ordered_at TIMESTAMP, created_at TIMESTAMP, {_STAMPS}",
    "order_items": "order_id VARCHAR, line_no INTEGER, product_id VARCHAR, quantity INTEGER, "
    f"unit_price_cents INTEGER, {_STAMPS}",
    "events": "event_id VARCHAR, customer_id BIGINT, event_type VARCHAR, product_id VARCHAR, url VARCHAR, "
    f"session_id VARCHAR, value_cents INTEGER, occurred_at TIMESTAMP, {_STAMPS}",
    "coupon_sets": "coupon_set_id VARCHAR, name VARCHAR, discount_type VARCHAR, discount_value INTEGER, "
    f"valid_from TIMESTAMP, valid_to TIMESTAMP, {_STAMPS}",
    "coupons": "coupon_code VARCHAR, coupon_set_id VARCHAR, customer_id BIGINT, status VARCHAR, "
    f"created_at TIMESTAMP, {_STAMPS}",
    "referral_contacts": "referral_id VARCHAR, email VARCHAR, first_name VARCHAR, last_name VARCHAR, "
    "phone VARCHAR, language VARCHAR, referrer_code VARCHAR, referred_by VARCHAR, loyalty_card VARCHAR, "
    f"created_at TIMESTAMP, {_STAMPS}",
    "dq_injected_defects": "table_name VARCHAR, record_key VARCHAR, defect VARCHAR",
}

_ARROW_TYPES = {
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
}
_PG_TYPES = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "VARCHAR": "text",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
}

# Shares of rows that get each defect; every kind gets at least two rows per chunk so that
# small builds still show all of them, while large builds keep the same proportions.
CUSTOMER_DEFECTS = {
    "invalid_email": 0.006,
    "missing_email": 0.004,
    "lowercase_enum": 0.005,
    "duplicate_key": 0.005,
    "overlong_field": 0.003,
    "embedded_newline": 0.004,
    "embedded_quote": 0.003,
    "blank_email": 0.002,
    "implausible_birthdate": 0.002,
    "overlong_address": 0.002,
}
PRODUCT_DEFECTS = {  # overlong_name and overlong_id are both recorded as overlong_field
    "negative_price": 0.01,
    "overlong_name": 0.006,
    "overlong_id": 0.004,
    "embedded_newline": 0.01,
    "duplicate_key": 0.01,
    "blank_required": 0.006,
}
ORDER_DEFECTS = {"lowercase_enum": 0.005, "future_order_date": 0.002}
REFERRAL_DEFECTS = {
    "invalid_email": 0.01,
    "missing_email": 0.01,
    "duplicate_key": 0.005,
    "embedded_newline": 0.005,
    "blank_name": 0.005,
}
_MIN_DEFECT_ROWS = 2

# Birthdates no person can have: year 1, the largest date, before 1900, far in the future.
_IMPLAUSIBLE_BIRTHDATES = (date(1, 1, 1), date(9999, 12, 31), date(1850, 6, 15), date(2099, 1, 1))
_BLANKS = ("", "   ", "\t")
FUTURE_ORDER_DAYS = 90  # a future_order_date order is dated this many days after the anchor

_STREAMS = ("customers", "products", "orders", "events", "coupon_sets", "referrals", "salt")

# --------------------------------------------------------------------------------------------
# Word lists. Names are "native:romanised" where the script is not Latin; gendered surnames are
# "male/female". Cities are "city|region|postal prefix". Templates use {d:k} for k random
# digits, {L:k} for k random letters and {n} for a house number.
# --------------------------------------------------------------------------------------------
_COUNTRIES = (
    dict(
        code="PL",
        language="pl",
        weight=0.25,
        currency="PLN",
        female="Anna, Maria, Katarzyna, Małgorzata, Agnieszka, Barbara, Ewa, Magdalena, Zofia, Joanna, "
        "Aleksandra, Natalia, Julia, Zuzanna, Monika, Krystyna",
        male="Piotr, Krzysztof, Andrzej, Tomasz, Paweł, Michał, Marcin, Jakub, Adam, Łukasz, Mateusz, "
        "Kamil, Jan, Wojciech, Grzegorz, Szymon",
        last="Nowak, Kowalski/Kowalska, Wiśniewski/Wiśniewska, Wójcik, Kowalczyk, Kamiński/Kamińska, "
        "Lewandowski/Lewandowska, Zieliński/Zielińska, Szymański/Szymańska, Woźniak, Dąbrowski/Dąbrowska, "
        "Kozłowski/Kozłowska, Mazur, Jankowski/Jankowska, Krawczyk, Piotrowski/Piotrowska, Pawlak, "
        "Grabowski/Grabowska, Michalski/Michalska, Król",
        cities="Warszawa|mazowieckie|00, Kraków|małopolskie|31, Łódź|łódzkie|90, Wrocław|dolnośląskie|50, "
        "Poznań|wielkopolskie|61, Gdańsk|pomorskie|80, Szczecin|zachodniopomorskie|70, Lublin|lubelskie|20, "
        "Katowice|śląskie|40, Białystok|podlaskie|15",
        streets="ul. Marszałkowska, ul. Długa, ul. Polna, al. Jerozolimskie, ul. Kwiatowa, ul. Lipowa, "
        "ul. Ogrodowa, ul. Słoneczna, ul. Mickiewicza, ul. Kościuszki, ul. Piłsudskiego, ul. Leśna",
        address="{s} {n}",
        line2="m. {n}",
        postal="{p}-{d:3}",
        phone="+48{m}{d:7}",
        mobile="50, 51, 53, 57, 60, 66, 69, 72, 73, 78, 79, 88",
        domains="wp.pl, onet.pl, interia.pl, o2.pl, gmail.com",
    ),
    dict(
        code="DE",
        language="de",
        weight=0.15,
        currency="EUR",
        female="Anna, Lena, Laura, Julia, Sarah, Lisa, Katharina, Sophie, Marie, Hannah, Johanna, Lea, "
        "Sabine, Ursula, Jana",
        male="Lukas, Leon, Jonas, Felix, Maximilian, Paul, Finn, Elias, Tim, Jan, Thomas, Michael, Stefan, "
        "Jürgen, Andreas",
        last="Müller, Schmidt, Schneider, Fischer, Weber, Meyer, Wagner, Becker, Schulz, Hoffmann, Schäfer, "
        "Koch, Bauer, Richter, Klein, Wolf, Schröder, Neumann, Schwarz, Zimmermann",
        cities="Berlin|Berlin|10, Hamburg|Hamburg|20, München|Bayern|80, Köln|Nordrhein-Westfalen|50, "
        "Frankfurt am Main|Hessen|60, Stuttgart|Baden-Württemberg|70, Düsseldorf|Nordrhein-Westfalen|40, "
        "Leipzig|Sachsen|04, Dresden|Sachsen|01, Hannover|Niedersachsen|30, Nürnberg|Bayern|90",
        streets="Hauptstraße, Bahnhofstraße, Schulstraße, Gartenstraße, Dorfstraße, Bergstraße, "
        "Lindenstraße, Goethestraße, Schillerstraße, Kirchstraße",
        address="{s} {n}",
        line2="Wohnung {n}",
        postal="{p}{d:3}",
        phone="+49{m}{d:8}",
        mobile="151, 152, 157, 160, 162, 170, 171, 172, 175, 176, 177, 179",
        domains="gmx.de, web.de, t-online.de, gmail.com",
    ),
    dict(
        code="FR",
        language="fr",
        weight=0.10,
        currency="EUR",
        female="Camille, Léa, Manon, Chloé, Emma, Inès, Sarah, Julie, Marie, Claire, Élodie, Céline, Sophie, "
        "Nathalie",
        male="Lucas, Hugo, Louis, Gabriel, Nathan, Jules, Théo, Thomas, Nicolas, Julien, Antoine, Pierre, "
        "François, Mathieu",
        last="Martin, Bernard, Dubois, Thomas, Robert, Richard, Petit, Durand, Leroy, Moreau, Simon, "
        "Laurent, Lefèvre, Michel, Garcia, David, Bertrand, Roux, Fontaine, Girard",
        cities="Paris|Île-de-France|75, Lyon|Auvergne-Rhône-Alpes|69, "
        "Marseille|Provence-Alpes-Côte d'Azur|13, Toulouse|Occitanie|31, "
        "Nice|Provence-Alpes-Côte d'Azur|06, Nantes|Pays de la Loire|44, "
        "Strasbourg|Grand Est|67, Bordeaux|Nouvelle-Aquitaine|33, Lille|Hauts-de-France|59",
        streets="rue de la Paix, rue Victor Hugo, avenue Jean Jaurès, boulevard Voltaire, "
        "rue de la République, place de la Mairie, rue des Lilas, avenue de la Gare, rue Pasteur",
        address="{n} {s}",
        line2="Appartement {n}",
        postal="{p}{d:3}",
        phone="+33{m}{d:8}",
        mobile="6, 7",
        domains="orange.fr, free.fr, laposte.net, gmail.com, yahoo.fr",
    ),
    dict(
        code="ES",
        language="es",
        weight=0.08,
        currency="EUR",
        female="María, Carmen, Lucía, Laura, Paula, Sofía, Marta, Elena, Ana, Isabel, Cristina, Alba, Nuria",
        male="Antonio, José, Manuel, Francisco, David, Javier, Daniel, Carlos, Alejandro, Pablo, Sergio, "
        "Jorge, Miguel",
        last="García, Fernández, González, Rodríguez, López, Martínez, Sánchez, Pérez, Gómez, Martín, "
        "Jiménez, Ruiz, Hernández, Díaz, Moreno, Álvarez, Romero, Navarro",
        cities="Madrid|Comunidad de Madrid|28, Barcelona|Cataluña|08, Valencia|Comunidad Valenciana|46, "
        "Sevilla|Andalucía|41, Zaragoza|Aragón|50, Málaga|Andalucía|29, Bilbao|País Vasco|48, "
        "Palma|Islas Baleares|07",
        streets="Calle Mayor, Calle Real, Avenida de la Constitución, Calle de Alcalá, Gran Vía, "
        "Calle del Sol, Paseo de Gracia, Calle San Juan",
        address="{s}, {n}",
        line2="{d:1}º {L:1}",
        postal="{p}{d:3}",
        phone="+34{m}{d:8}",
        mobile="6, 7",
        domains="gmail.com, hotmail.es, yahoo.es, telefonica.net",
    ),
    dict(
        code="GB",
        language="en",
        weight=0.10,
        currency="GBP",
        female="Olivia, Amelia, Isla, Ava, Emily, Sophie, Grace, Lily, Charlotte, Jessica, Emma, Hannah, "
        "Chloe",
        male="Oliver, George, Harry, Jack, Jacob, Noah, Charlie, Thomas, Oscar, William, James, Daniel, "
        "Samuel",
        last="Smith, Jones, Williams, Taylor, Brown, Davies, Evans, Wilson, Thomas, Johnson, Roberts, "
        "Robinson, Thompson, Wright, Walker, White, Edwards, Hughes, Green, O'Brien",
        cities="London|England|SW, London|England|E, Manchester|England|M, Birmingham|England|B, "
        "Leeds|England|LS, Glasgow|Scotland|G, Edinburgh|Scotland|EH, Cardiff|Wales|CF, Bristol|England|BS, "
        "Liverpool|England|L, Belfast|Northern Ireland|BT",
        streets="High Street, Station Road, Church Lane, Victoria Road, Park Avenue, Queen Street, "
        "King's Road, Mill Lane, London Road",
        address="{n} {s}",
        line2="Flat {n}",
        postal="{p}{d:1} {d:1}{L:2}",
        phone="+44{m}{d:9}",
        mobile="7",
        domains="gmail.com, outlook.com, btinternet.com, yahoo.co.uk, hotmail.co.uk",
    ),
    dict(
        code="IT",
        language="it",
        weight=0.08,
        currency="EUR",
        female="Giulia, Sofia, Aurora, Alice, Martina, Chiara, Francesca, Sara, Elena, Valentina, Alessia, "
        "Federica",
        male="Leonardo, Francesco, Alessandro, Lorenzo, Mattia, Andrea, Gabriele, Matteo, Marco, Luca, "
        "Giuseppe, Davide",
        last="Rossi, Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, Bruno, Gallo, "
        "Conti, De Luca, Mancini, Costa, Giordano, Rizzo",
        cities="Roma|Lazio|00, Milano|Lombardia|20, Napoli|Campania|80, Torino|Piemonte|10, "
        "Palermo|Sicilia|90, Bologna|Emilia-Romagna|40, Firenze|Toscana|50, Genova|Liguria|16, "
        "Venezia|Veneto|30",
        streets="Via Roma, Via Garibaldi, Corso Italia, Via Mazzini, Via Dante, Piazza del Popolo, "
        "Via Verdi, Via Cavour, Viale Europa",
        address="{s}, {n}",
        line2="Interno {n}",
        postal="{p}{d:3}",
        phone="+39{m}{d:7}",
        mobile="320, 328, 333, 338, 340, 347, 348, 349, 366, 389",
        domains="libero.it, virgilio.it, gmail.com, alice.it, tiscali.it",
    ),
    dict(
        code="SE",
        language="sv",
        weight=0.05,
        currency="SEK",
        female="Alice, Maja, Elsa, Astrid, Wilma, Freja, Ebba, Olivia, Saga, Ella, Linnea, Ingrid, Karin",
        male="William, Liam, Noah, Hugo, Lucas, Oscar, Elias, Adam, Erik, Lars, Anders, Johan, Karl, Nils",
        last="Andersson, Johansson, Karlsson, Nilsson, Eriksson, Larsson, Olsson, Persson, Svensson, "
        "Gustafsson, Pettersson, Jonsson, Lindberg, Lindström, Bergström",
        cities="Stockholm|Stockholms län|11, Göteborg|Västra Götalands län|41, Malmö|Skåne län|21, "
        "Uppsala|Uppsala län|75, Västerås|Västmanlands län|72, Örebro|Örebro län|70, "
        "Linköping|Östergötlands län|58",
        streets="Storgatan, Kungsgatan, Drottninggatan, Skolgatan, Parkvägen, Björkvägen, Järnvägsgatan, "
        "Östra Långgatan",
        address="{s} {n}",
        line2="Lgh {d:4}",
        postal="{p}{d:1} {d:2}",
        phone="+46{m}{d:7}",
        mobile="70, 72, 73, 76, 79",
        domains="gmail.com, telia.com, hotmail.se, outlook.com",
    ),
    dict(
        code="UA",
        language="uk",
        weight=0.07,
        currency="UAH",
        female="Олена:olena, Ірина:iryna, Наталія:nataliia, Оксана:oksana, Тетяна:tetiana, Юлія:yuliia, "
        "Анна:anna, Марія:mariia, Катерина:kateryna, Софія:sofiia, Вікторія:viktoriia",
        male="Олександр:oleksandr, Андрій:andrii, Сергій:serhii, Дмитро:dmytro, Іван:ivan, Микола:mykola, "
        "Максим:maksym, Богдан:bohdan, Тарас:taras, Владислав:vladyslav, Юрій:yurii",
        last="Шевченко:shevchenko, Коваленко:kovalenko, Бондаренко:bondarenko, Ткаченко:tkachenko, "
        "Кравченко:kravchenko, Олійник:oliinyk, Мельник:melnyk, Шевчук:shevchuk, Поліщук:polishchuk, "
        "Бойко:boiko, Ковальчук:kovalchuk, Савченко:savchenko, Лисенко:lysenko, Руденко:rudenko",
        cities="Київ|місто Київ|01, Харків|Харківська область|61, Одеса|Одеська область|65, "
        "Дніпро|Дніпропетровська область|49, Львів|Львівська область|79, Запоріжжя|Запорізька область|69, "
        "Вінниця|Вінницька область|21",
        streets="вул. Хрещатик, вул. Шевченка, просп. Перемоги, вул. Франка, вул. Грушевського, "
        "вул. Садова, вул. Соборна, бульв. Лесі Українки",
        address="{s}, {n}",
        line2="кв. {n}",
        postal="{p}{d:3}",
        phone="+380{m}{d:7}",
        mobile="50, 63, 66, 67, 68, 73, 93, 95, 96, 97, 98, 99",
        domains="ukr.net, gmail.com, i.ua, meta.ua",
    ),
    dict(
        code="GR",
        language="el",
        weight=0.04,
        currency="EUR",
        female="Μαρία:maria, Ελένη:eleni, Αικατερίνη:aikaterini, Βασιλική:vasiliki, Σοφία:sofia, "
        "Αγγελική:angeliki, Γεωργία:georgia, Δήμητρα:dimitra, Κωνσταντίνα:konstantina, Ευαγγελία:evangelia",
        male="Γεώργιος:georgios, Ιωάννης:ioannis, Κωνσταντίνος:konstantinos, Δημήτριος:dimitrios, "
        "Νικόλαος:nikolaos, Παναγιώτης:panagiotis, Βασίλειος:vasileios, Χρήστος:christos, "
        "Αθανάσιος:athanasios, Μιχαήλ:michail",
        last="Παπαδόπουλος/Παπαδοπούλου:papadopoulos/papadopoulou, Παπαδάκης/Παπαδάκη:papadakis/papadaki, "
        "Γεωργίου:georgiou, Οικονόμου:oikonomou, Νικολάου:nikolaou, Βασιλείου:vasileiou, "
        "Παπανικολάου:papanikolaou, Αντωνίου:antoniou, Μακρής/Μακρή:makris/makri, "
        "Καραγιάννης/Καραγιάννη:karagiannis/karagianni",
        cities="Αθήνα|Αττική|10, Θεσσαλονίκη|Κεντρική Μακεδονία|54, Πάτρα|Δυτική Ελλάδα|26, "
        "Ηράκλειο|Κρήτη|71, Λάρισα|Θεσσαλία|41, Βόλος|Θεσσαλία|38",
        streets="Ερμού, Σταδίου, Πανεπιστημίου, Αιόλου, Τσιμισκή, Εγνατίας, Κηφισίας, Βασιλίσσης Σοφίας",
        address="{s} {n}",
        line2="Διαμέρισμα {n}",
        postal="{p}{d:1} {d:2}",
        phone="+30{m}{d:7}",
        mobile="690, 693, 694, 695, 697, 698, 699",
        domains="gmail.com, yahoo.gr, otenet.gr, hotmail.com",
    ),
    dict(
        code="CN",
        language="zh",
        weight=0.04,
        currency="CNY",
        female="芳:fang, 娜:na, 敏:min, 静:jing, 丽:li, 秀英:xiuying, 婷:ting, 雪:xue, 慧:hui, 玲:ling",
        male="伟:wei, 强:qiang, 磊:lei, 军:jun, 洋:yang, 勇:yong, 杰:jie, 涛:tao, 明:ming, 浩:hao",
        last="王:wang, 李:li, 张:zhang, 刘:liu, 陈:chen, 杨:yang, 黄:huang, 赵:zhao, 吴:wu, 周:zhou, 徐:xu, "
        "孙:sun",
        cities="北京|北京市|10, 上海|上海市|20, 广州|广东省|51, 深圳|广东省|51, 成都|四川省|61, "
        "杭州|浙江省|31, 武汉|湖北省|43, 南京|江苏省|21",
        streets="中山路, 人民路, 解放路, 建设路, 长江路, 和平路, 南京路, 文化路",
        address="{s}{n}号",
        line2="{n}室",
        postal="{p}{d:4}",
        phone="+86{m}{d:8}",
        mobile="130, 135, 138, 139, 150, 158, 186, 188",
        domains="qq.com, 163.com, 126.com, sina.com",
    ),
    dict(
        code="JP",
        language="ja",
        weight=0.04,
        currency="JPY",
        female="陽菜:hina, 結衣:yui, 美咲:misaki, さくら:sakura, 葵:aoi, 愛:ai, 優子:yuko, 恵子:keiko, "
        "直美:naomi, 真由美:mayumi",
        male="翔太:shota, 大輔:daisuke, 拓也:takuya, 健太:kenta, 蓮:ren, 悠真:yuma, 浩:hiroshi, 誠:makoto, "
        "隆:takashi, 直樹:naoki",
        last="佐藤:sato, 鈴木:suzuki, 高橋:takahashi, 田中:tanaka, 伊藤:ito, 渡辺:watanabe, 山本:yamamoto, "
        "中村:nakamura, 小林:kobayashi, 加藤:kato, 吉田:yoshida, 山田:yamada",
        cities="東京|東京都|10, 大阪|大阪府|53, 横浜|神奈川県|22, 名古屋|愛知県|45, 札幌|北海道|06, "
        "福岡|福岡県|81, 京都|京都府|60",
        streets="銀座, 新宿, 渋谷, 梅田, 栄, 天神, 中央, 本町",
        address="{s}{n}-{n}-{n}",
        line2="{n}号室",
        postal="{p}{d:1}-{d:4}",
        phone="+81{m}{d:8}",
        mobile="70, 80, 90",
        domains="gmail.com, yahoo.co.jp, docomo.ne.jp, ezweb.ne.jp",
    ),
)
_FX_PER_EUR = {"EUR": 1.0, "PLN": 4.3, "GBP": 0.86, "SEK": 11.4, "UAH": 45.0, "CNY": 7.8, "JPY": 160.0}
_COMPANIES = (
    "Acme Sp. z o.o., Müller & Söhne GmbH, Dupont SARL, Iberia Logística S.L., Thames Digital Ltd, "
    "Bottega Rossi S.r.l., Nordic Trä AB, Київ Софт ТОВ, Ελληνικά Τρόφιμα Α.Ε., "
    "华为技术有限公司, 株式会社山田商事"
)
_CONSENTS = ("GRANTED", "DENIED", "UNKNOWN")
_ORDER_STATUSES = ("CREATED", "PAID", "CANCELED", "FULFILLED")
_EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "checkout", "login", "search")
_BRANDS = (
    "Nordwind, Atelier Lumen, Kobo & Co, Vento, Saga Outdoor, Hanami, Maison Verte, Urban Fox, Bergkvist, "
    "Olive & Oak, Polar Line, Casa Sol"
)
_SUB_CATEGORIES = (  # category, sub_category, typical price in EUR cents, nouns, materials
    ("Apparel", "T-Shirts", 2499, "T-Shirt, Tee, Polo", "Cotton, Organic Cotton, Linen"),
    ("Apparel", "Sweaters", 5999, "Sweater, Cardigan, Hoodie", "Merino, Wool, Cashmere Blend, Cotton"),
    (
        "Apparel",
        "Jackets",
        12999,
        "Jacket, Parka, Raincoat, Blazer",
        "Down, Waxed Cotton, Recycled Nylon, Wool",
    ),
    ("Apparel", "Dresses", 7999, "Dress, Maxi Dress, Shirt Dress", "Linen, Viscose, Silk, Cotton"),
    ("Apparel", "Jeans", 6999, "Jeans, Chinos, Trousers", "Denim, Stretch Denim, Twill"),
    ("Footwear", "Sneakers", 8999, "Sneakers, Runners, Trainers", "Leather, Suede, Mesh"),
    ("Footwear", "Boots", 14999, "Boots, Chelsea Boots, Hiking Boots", "Leather, Suede, Nubuck"),
    ("Footwear", "Sandals", 4999, "Sandals, Slides, Espadrilles", "Leather, Cork, Canvas"),
    ("Accessories", "Bags", 7999, "Tote Bag, Backpack, Crossbody Bag", "Leather, Canvas, Recycled Nylon"),
    ("Accessories", "Hats", 2999, "Beanie, Cap, Bucket Hat", "Wool, Cotton, Merino"),
    ("Accessories", "Scarves", 3999, "Scarf, Snood, Shawl", "Wool, Silk, Cashmere Blend"),
    ("Home", "Candles", 1999, "Candle, Travel Candle, Candle Set", "Soy Wax, Beeswax"),
    ("Home", "Cushions", 2999, "Cushion, Throw, Blanket", "Linen, Wool, Cotton"),
    ("Beauty", "Skincare", 2499, "Face Cream, Serum, Cleanser", "Vitamin C, Hyaluronic, Aloe"),
    (
        "Beauty",
        "Fragrance",
        5999,
        "Eau de Parfum, Eau de Toilette, Body Mist",
        "Cedar, Citrus, Vanilla, Amber",
    ),
)
_ADJECTIVES = (
    "Classic, Essential, Everyday, Signature, Relaxed, Slim, Heritage, Weekend, Studio, Alpine, "
    "Coastal, Urban"
)
_COLORS = (
    "Black, White, Navy, Grey Melange, Olive, Sand, Burgundy, Forest Green, Sky Blue, Terracotta, "
    "Cream, Charcoal"
)
_SEASONS = "SS25, AW25, SS26, AW26, CORE"
_SENTENCES = (
    "Designed in our studio and made to be worn season after season.",
    "A versatile piece that pairs easily with the rest of your wardrobe.",
    "Crafted from carefully sourced materials with a soft, comfortable hand feel.",
    "The relaxed fit leaves room for layering on colder days.",
    "Finished with reinforced seams and tonal stitching for a clean look.",
    "Produced in a certified factory that pays fair wages.",
    "Machine washable at 30 degrees; dry flat to keep the shape.",
    "Our best-selling silhouette, updated with a new colour palette.",
    "Lightweight enough for travel and warm enough for the evening.",
    "Each piece is inspected by hand before it leaves the workshop.",
    "The packaging is plastic-free and made from recycled cardboard.",
    "Part of a limited run; once it is gone it will not be restocked.",
    "Tested by our community of runners, hikers and city commuters.",
    "Free returns within 30 days if it is not quite right.",
    "Pairs well with the matching accessories from the same collection.",
    "The colour may vary slightly from the photos because of natural dyes.",
)
_SITE = "https://shop.example.com"
_PAGES = (
    "/, /new-in, /sale, /c/apparel, /c/footwear, /c/accessories, /c/home, /c/beauty, /stores, /help/shipping"
)
_SEARCH_TERMS = (
    "sweater, merino, boots, tote bag, candle, black dress, sneakers, gift for him, sale, linen shirt"
)
_COUPON_SETS = (  # code prefix, name, discount type, value (percent or EUR cents)
    ("WELCOME10", "Welcome 10% off", "PERCENT", 10),
    ("SUMMER20", "Summer sale 20%", "PERCENT", 20),
    ("BLACKFRIDAY30", "Black Friday 30%", "PERCENT", 30),
    ("FREESHIP", "Free shipping", "AMOUNT", 499),
    ("SAVE10EUR", "10 EUR off", "AMOUNT", 1000),
    ("VIP15", "VIP club 15%", "PERCENT", 15),
    ("BIRTHDAY25", "Birthday gift 25%", "PERCENT", 25),
    ("WINBACK20EUR", "We miss you - 20 EUR off", "AMOUNT", 2000),
    ("APPFIRST5", "First app order 5%", "PERCENT", 5),
    ("NEWSLETTER10", "Newsletter signup 10%", "PERCENT", 10),
)

_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
_LETTERS = np.frombuffer(b"ABCDEFGHJKLMNPQRSTUVWXYZ", dtype=np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_BASE32 = np.frombuffer(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ", dtype=np.uint8)
_MULT = 0x9E3779B97F4A7C15  # odd, so multiplying by it permutes integers modulo any power of two
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ß": "ss", "ø": "o", "æ": "ae", "œ": "oe", "đ": "d"})
_FORMATTER = string.Formatter()


# --------------------------------------------------------------------------------------------
# Vectorised helpers
# --------------------------------------------------------------------------------------------
def _rng(seed: int, stream: str, chunk: int = 0) -> np.random.Generator:
    """Independent stream per table and chunk, so tables do not shift when another changes."""
    return np.random.default_rng([seed, _STREAMS.index(stream), chunk])


def _salt(seed: int, label: int) -> int:
    return int(_rng(seed, "salt", label).integers(0, 2**62))


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def _ascii(text: str) -> str:
    """Email-safe lower-case ASCII form of a Latin name (Łukasz -> lukasz, O'Brien -> obrien)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if c.isascii() and (c.isalpha() or c == "-")).lower()


def _fixed(codes: np.ndarray) -> pa.Array:
    """Strings from an (n, width) matrix of ASCII codes, without a Python loop."""
    n, width = codes.shape
    offsets = np.arange(n + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(codes, dtype=np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _encode(values: np.ndarray, width: int, alphabet: np.ndarray) -> pa.Array:
    """Fixed-width positional encoding (decimal, hex, base32) of non-negative integers."""
    powers = np.uint64(len(alphabet)) ** np.arange(width - 1, -1, -1, dtype=np.uint64)
    digits = (values.astype(np.uint64)[:, None] // powers) % np.uint64(len(alphabet))
    return _fixed(alphabet[digits])


def _scramble(seq: np.ndarray, bits: int, salt: int) -> np.ndarray:
    """Bijection on [0, 2**bits): random-looking codes that can never collide."""
    mask = np.uint64((1 << bits) - 1)
    return (seq.astype(np.uint64) * np.uint64(_MULT) + np.uint64(salt)) & mask


def _numbered(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return _cat(prefix, text)


def _cat(*parts: pa.Array | str) -> pa.Array:
    """Row-wise concatenation of arrays and constants (NULL if any array value is NULL)."""
    args = [p if isinstance(p, (pa.Array, pa.ChunkedArray)) else pa.scalar(p, pa.string()) for p in parts]
    return pc.binary_join_element_wise(*args, "")


def _const(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _nulls_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def _choice(rng: np.random.Generator, options: pa.Array, n: int, p: np.ndarray | None = None) -> pa.Array:
    return options.take(pa.array(rng.choice(len(options), size=n, p=p)))


def _render(rng: np.random.Generator, n: int, template: str, fields: dict | None = None) -> pa.Array:
    """Fill a template for n rows: {d:k}/{L:k} random digits/letters, {n} a house number,
    other names from `fields` (an Arrow array of n values, or a tuple of options to pick from)."""
    parts: list[pa.Array | str] = []
    for literal, name, spec, _ in _FORMATTER.parse(template):
        if literal:
            parts.append(literal)
        if name == "d":
            parts.append(_fixed(_DIGITS[rng.integers(0, 10, (n, int(spec)))]))
        elif name == "L":
            parts.append(_fixed(_LETTERS[rng.integers(0, len(_LETTERS), (n, int(spec)))]))
        elif name == "n":
            parts.append(pc.cast(pa.array(np.minimum(rng.geometric(0.04, n), 250)), pa.string()))
        elif name is not None:
            value = fields[name]
            parts.append(value if isinstance(value, pa.Array) else _choice(rng, pa.array(value), n))
    if not any(isinstance(p, pa.Array) for p in parts):
        return _const("".join(parts), n)
    return _cat(*parts)


def _patch(values: pa.Array, idx: np.ndarray, replacements: list) -> pa.Array:
    """values[idx] = replacements, for the few rows that get a defect (idx sorted)."""
    mask = np.zeros(len(values), dtype=bool)
    mask[idx] = True
    return pc.replace_with_mask(values, pa.array(mask), pa.array(replacements, values.type))


def _timestamps(micros: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), pa.timestamp("us"), mask=null)


def _roles(
    rng: np.random.Generator, n: int, shares: dict[str, float], deleted: float
) -> dict[str, np.ndarray]:
    """Disjoint sorted row sets for each defect kind and for soft deletes."""
    order = rng.permutation(n)
    roles, start = {}, 0
    for name, share in [*shares.items(), ("deleted", deleted)]:
        count = round(share * n) if name == "deleted" else max(_MIN_DEFECT_ROWS, round(share * n))
        count = min(count, n - start)
        roles[name] = np.sort(order[start : start + count])
        start += count
    return roles


@dataclass
class _Window:
    """updated_at values in [anchor - 30 days, anchor) with the soft-delete mask."""

    updated: np.ndarray
    deleted: np.ndarray
    duplicate_updated: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, anchor_us: int, roles: dict[str, np.ndarray]) -> _Window:
        start = anchor_us - SPAN_US
        updated = start + rng.integers(0, SPAN_US, n)
        deleted = np.zeros(n, dtype=bool)
        deleted[roles.get("deleted", [])] = True
        # A duplicated row keeps its first version in the first half of the window, so that the
        # second version can be strictly later and still before the anchor.
        dup = roles.get("duplicate_key", np.empty(0, dtype=np.int64))
        updated[dup] = start + rng.integers(0, SPAN_US // 2, len(dup))
        later = updated[dup] + rng.integers(1_000_000, SPAN_US // 2, len(dup))
        return cls(updated, deleted, later)

    def created(self, rng: np.random.Generator, anchor_us: int, max_age: int) -> np.ndarray:
        """created_at <= updated_at; about 8% of the rows were also created inside the window."""
        n = len(self.updated)
        recent = rng.integers(0, self.updated - (anchor_us - SPAN_US) + 1)
        return self.updated - np.where(rng.random(n) < 0.08, recent, rng.integers(0, max_age, n))

    def columns(self) -> dict[str, pa.Array]:
        return {
            "updated_at": _timestamps(self.updated),
            "deleted_at": _timestamps(self.updated, ~self.deleted),
        }


def _append_duplicates(
    columns: dict[str, pa.Array], idx: np.ndarray, later: np.ndarray, changes: dict[str, pa.Array]
) -> dict[str, pa.Array]:
    """Second versions of rows idx with later updated_at and the changed columns."""
    copies = {name: values.take(pa.array(idx)) for name, values in columns.items()}
    copies.update(changes, updated_at=_timestamps(later))
    return {
        name: pa.concat_arrays([values, copies[name].cast(values.type)]) for name, values in columns.items()
    }


# --------------------------------------------------------------------------------------------
# People (customers and referral contacts)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Country:
    """A country's word lists as Arrow arrays, ready for vectorised sampling."""

    code: str
    language: str
    weight: float
    currency: str
    first: pa.Array  # female names, then male names
    first_ascii: pa.Array
    female_count: int
    last: pa.Array  # male forms, then female forms
    last_ascii: pa.Array
    cities: pa.Array
    regions: pa.Array
    postal_prefixes: pa.Array
    city_weights: np.ndarray
    templates: dict[str, str]
    options: dict[str, tuple[str, ...]]


def _native_ascii(entry: str) -> list[tuple[str, str]]:
    native, _, roman = entry.partition(":")
    natives = native.split("/")
    romans = roman.split("/") if roman else [_ascii(name) for name in natives]
    return list(zip(natives, romans, strict=True))


@functools.cache
def _countries() -> tuple[_Country, ...]:
    countries = []
    for raw in _COUNTRIES:
        female = [_native_ascii(e)[0] for e in _items(raw["female"])]
        male = [_native_ascii(e)[0] for e in _items(raw["male"])]
        last = [_native_ascii(e) for e in _items(raw["last"])]
        last = [forms * 2 if len(forms) == 1 else forms for forms in last]
        cities = [entry.split("|") for entry in _items(raw["cities"])]
        weights = 1 / np.arange(1, len(cities) + 1) ** 0.8
        countries.append(
            _Country(
                code=raw["code"],
                language=raw["language"],
                weight=raw["weight"],
                currency=raw["currency"],
                first=pa.array([n for n, _ in female + male]),
                first_ascii=pa.array([a for _, a in female + male]),
                female_count=len(female),
                last=pa.array([f[0][0] for f in last] + [f[1][0] for f in last]),
                last_ascii=pa.array([f[0][1] for f in last] + [f[1][1] for f in last]),
                cities=pa.array([c[0] for c in cities]),
                regions=pa.array([c[1] for c in cities]),
                postal_prefixes=pa.array([c[2] for c in cities]),
                city_weights=weights / weights.sum(),
                templates={key: raw[key] for key in ("address", "line2", "postal", "phone")},
                options={key: tuple(_items(raw[key])) for key in ("streets", "mobile", "domains")},
            )
        )
    return tuple(countries)


def _country_people(rng: np.random.Generator, country: _Country, gender: np.ndarray) -> dict[str, pa.Array]:
    n = len(gender)
    female = (gender == 0) | ((gender == 2) & (rng.random(n) < 0.5))
    male_count = len(country.first) - country.female_count
    first = np.where(
        female,
        rng.integers(0, country.female_count, n),
        country.female_count + rng.integers(0, male_count, n),
    )
    last = rng.integers(0, len(country.last) // 2, n) + female * (len(country.last) // 2)
    city = pa.array(rng.choice(len(country.cities), size=n, p=country.city_weights))
    templates, options = country.templates, country.options
    return {
        "first_name": country.first.take(pa.array(first)),
        "first_ascii": country.first_ascii.take(pa.array(first)),
        "last_name": country.last.take(pa.array(last)),
        "last_ascii": country.last_ascii.take(pa.array(last)),
        "city": country.cities.take(city),
        "region": country.regions.take(city),
        "postal_code": _render(rng, n, templates["postal"], {"p": country.postal_prefixes.take(city)}),
        "address_line1": _render(rng, n, templates["address"], {"s": options["streets"]}),
        "address_line2": _nulls_where(_render(rng, n, templates["line2"]), rng.random(n) < 0.75),
        "phone": _render(rng, n, templates["phone"], {"m": options["mobile"]}),
        "language": pc.if_else(pa.array(rng.random(n) < 0.1), "en", country.language),  # expats
        "domain": _choice(rng, pa.array(options["domains"]), n),
        "currency": _const(country.currency, n),
    }


def _people(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """Names, addresses and phones consistent with each person's country, in random country order."""
    countries = _countries()
    weights = np.array([c.weight for c in countries])
    country = rng.choice(len(countries), size=n, p=weights / weights.sum())
    gender = rng.choice(3, size=n, p=[0.49, 0.48, 0.03])
    order = np.argsort(country, kind="stable")
    counts = np.bincount(country, minlength=len(countries))
    parts: dict[str, list[pa.Array]] = {}
    start = 0
    for spec, count in zip(countries, counts, strict=True):
        if count:
            for name, values in _country_people(rng, spec, gender[order[start : start + count]]).items():
                parts.setdefault(name, []).append(values)
        start += count
    inverse = pa.array(np.argsort(order))
    people = {name: pa.concat_arrays(chunks).take(inverse) for name, chunks in parts.items()}
    people["country_index"] = pa.array(country)
    people["country_code"] = pa.array([c.code for c in countries]).take(people["country_index"])
    people["gender"] = pa.array(["F", "M", "U"]).take(pa.array(gender))
    return people


def _emails(rng: np.random.Generator, people: dict[str, pa.Array], suffix: pa.Array) -> pa.Array:
    """Name-based addresses; the numeric suffix keeps them unique."""
    first, last = people["first_ascii"], people["last_ascii"]
    patterns = [
        _cat(first, ".", last, suffix),
        _cat(first, "_", last, suffix),
        _cat(pc.utf8_slice_codeunits(first, 0, 1), last, suffix),
        _cat(last, ".", first, suffix),
    ]
    local = pc.choose(pa.array(rng.integers(0, len(patterns), len(suffix)).astype(np.int8)), *patterns)
    return _cat(local, "@", people["domain"])


def _invalid_emails(rng: np.random.Generator, emails: list[str]) -> list[str]:
    broken = []
    for email, variant in zip(emails, rng.integers(0, 3, len(emails)), strict=True):
        local, _, domain = email.partition("@")
        broken.append((f"{local}@", f"{local}.{domain}", f"{local[:2]} {local[2:]}@{domain}")[variant])
    return broken


def _overlong(rng: np.random.Generator, names: list[str]) -> list[str]:
    return [
        ((name + " ") * (400 // len(name) + 1))[:size]
        for name, size in zip(names, rng.integers(300, 400, len(names)), strict=True)
    ]


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
class _Writer:
    """Creates the tables and appends Arrow chunks, casting to the declared column types."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tables: list[str]):
        self.con = con
        for table in tables:
            con.execute(f"CREATE TABLE {table} ({TABLES[table]})")

    def append(self, table: str, columns: dict[str, pa.Array]) -> None:
        definitions = [column.split() for column in TABLES[table].split(", ")]
        fields = [pa.field(name, _ARROW_TYPES[kind]) for name, kind, *_ in definitions]
        arrays = [columns[f.name].cast(f.type) for f in fields]
        self.con.register("_chunk", pa.Table.from_arrays(arrays, schema=pa.schema(fields)))
        self.con.execute(f"INSERT INTO {table} SELECT * FROM _chunk")
        self.con.unregister("_chunk")

    def defects(self, table: str, keys: pa.Array, defect: str) -> None:
        n = len(keys)
        self.append(
            "dq_injected_defects",
            {
                "table_name": _const(table, n),
                "record_key": keys,
                "defect": _const(defect, n),
            },
        )


@dataclass
class _Customers:
    """What the per-customer tables need to know about a chunk of customers."""

    ids: np.ndarray
    created: np.ndarray
    currency: pa.Array
    fx_per_eur: np.ndarray


def _customer_chunk(out: _Writer, seed: int, chunk: int, first_id: int, n: int, anchor_us: int) -> _Customers:
    rng = _rng(seed, "customers", chunk)
    people = _people(rng, n)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    keys = pc.cast(pa.array(ids), pa.string())
    roles = _roles(rng, n, CUSTOMER_DEFECTS, deleted=0.01)
    window = _Window.draw(rng, n, anchor_us, roles)
    created = window.created(rng, anchor_us, 6 * YEAR_US)
    phone = _nulls_where(people["phone"], rng.random(n) < 0.15)
    consents = pa.array(_CONSENTS)
    birth_days = (anchor_us // DAY_US) - rng.integers(18 * 365, 85 * 365, n)
    columns = {
        "customer_id": pa.array(ids),
        "email": _emails(rng, people, keys),
        "phone": phone,
        "first_name": people["first_name"],
        "last_name": people["last_name"],
        "birth_date": pa.array(birth_days.astype("datetime64[D]"), pa.date32(), mask=rng.random(n) < 0.1),
        "gender": people["gender"],
        "language": people["language"],
        "address_line1": people["address_line1"],
        "address_line2": people["address_line2"],
        "city": people["city"],
        "postal_code": people["postal_code"],
        "region": people["region"],
        "country_code": people["country_code"],
        "email_marketing_consent": _choice(rng, consents, n, np.array([0.45, 0.25, 0.30])),
        "email_transactional_consent": _choice(rng, consents, n, np.array([0.85, 0.05, 0.10])),
        "sms_marketing_consent": pc.if_else(
            pc.is_null(phone), "UNKNOWN", _choice(rng, consents, n, np.array([0.30, 0.30, 0.40]))
        ),
        "sms_transactional_consent": pc.if_else(
            pc.is_null(phone), "UNKNOWN", _choice(rng, consents, n, np.array([0.70, 0.10, 0.20]))
        ),
        "loyalty_points": pa.array(
            np.where(rng.random(n) < 0.2, 0, rng.exponential(400, n)).astype(np.int32)
        ),
        "company": _nulls_where(_choice(rng, pa.array(_items(_COMPANIES)), n), rng.random(n) >= 0.04),
        "created_at": _timestamps(created),
        **window.columns(),
    }
    _customer_defects(rng, columns, roles)
    dup = roles["duplicate_key"]
    columns = _append_duplicates(
        columns,
        dup,
        window.duplicate_updated,
        {
            "loyalty_points": pa.array(columns["loyalty_points"].take(pa.array(dup)).to_numpy() + 50),
            "email_marketing_consent": _choice(rng, consents, len(dup)),
        },
    )
    out.append("customers", columns)
    for defect, idx in roles.items():
        if defect != "deleted":
            out.defects("customers", keys.take(pa.array(idx)), defect)
    fx = np.array([_FX_PER_EUR[country.currency] for country in _countries()])
    return _Customers(ids, created, people["currency"], fx[people["country_index"].to_numpy()])


def _customer_defects(
    rng: np.random.Generator, columns: dict[str, pa.Array], roles: dict[str, np.ndarray]
) -> None:
    """Rewrite the few rows picked for each defect kind (duplicate_key is added afterwards)."""

    def rewrite(column: str, idx: np.ndarray, change) -> None:
        if len(idx):
            columns[column] = _patch(
                columns[column], idx, change(columns[column].take(pa.array(idx)).to_pylist())
            )

    rewrite("email", roles["invalid_email"], lambda values: _invalid_emails(rng, values))
    rewrite("email", roles["missing_email"], lambda values: [None] * len(values))
    enum_columns = (
        "email_marketing_consent",
        "email_transactional_consent",
        "sms_marketing_consent",
        "sms_transactional_consent",
        "country_code",
    )
    idx = roles["lowercase_enum"]
    which = rng.integers(0, len(enum_columns), len(idx))
    for i, column in enumerate(enum_columns):
        rewrite(column, idx[which == i], lambda values: [v.lower() for v in values])
    idx = roles["overlong_field"]
    which = rng.random(len(idx)) < 0.5
    rewrite("first_name", idx[which], lambda values: _overlong(rng, values))
    rewrite("last_name", idx[~which], lambda values: _overlong(rng, values))
    idx = roles["embedded_newline"]
    cities = columns["city"].take(pa.array(idx)).to_pylist()
    rewrite("address_line1", idx, lambda values: [f"{v}\n{c}" for v, c in zip(values, cities, strict=True)])
    idx = roles["embedded_quote"]
    firsts = columns["first_name"].take(pa.array(idx)).to_pylist()
    rewrite("last_name", idx, lambda values: [f'{v}; "{f}"' for v, f in zip(values, firsts, strict=True)])
    rewrite("email", roles["blank_email"], lambda values: [_BLANKS[i % 2 + 1] for i in range(len(values))])
    rewrite(
        "birth_date",
        roles["implausible_birthdate"],
        lambda values: [_IMPLAUSIBLE_BIRTHDATES[i % 4] for i in range(len(values))],
    )
    rewrite(
        "address_line2",
        roles["overlong_address"],
        lambda values: [(f"{v or 'Flat 1'}, " * 2000)[:10_000] for v in values],
    )


@dataclass
class _Catalog:
    """Products that orders and events may reference (no price or id defect)."""

    ids: pa.Array
    urls: pa.Array
    price_cents: np.ndarray

    def pick(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Skewed popularity: a few products sell much more than the long tail."""
        return (rng.random(n) ** 1.6 * len(self.ids)).astype(np.int64)


def _products(out: _Writer, seed: int, n: int, anchor_us: int) -> _Catalog:
    rng = _rng(seed, "products")
    roles = _roles(rng, n, PRODUCT_DEFECTS, deleted=0.01)
    window = _Window.draw(rng, n, anchor_us, roles)
    sub = rng.integers(0, len(_SUB_CATEGORIES), n)
    subs = pa.array(sub)

    def grouped(position: int) -> pa.Array:
        groups = [_items(row[position]) for row in _SUB_CATEGORIES]
        offsets = np.cumsum([0] + [len(g) for g in groups])
        sizes = np.diff(offsets)
        flat = pa.array([w for g in groups for w in g])
        return flat.take(pa.array(offsets[sub] + (rng.random(n) * sizes[sub]).astype(np.int64)))

    brand, color = _choice(rng, pa.array(_items(_BRANDS)), n), _choice(rng, pa.array(_items(_COLORS)), n)
    title = _cat(brand, " ", _choice(rng, pa.array(_items(_ADJECTIVES)), n), " ", grouped(4), " ", grouped(3))
    name = _cat(title, " – ", color)
    product_id = _numbered("P", np.arange(1, n + 1), 6)
    brand_code = pc.utf8_upper(pc.utf8_slice_codeunits(pc.replace_substring(brand, " ", ""), 0, 4))
    sku = _cat(brand_code, "-", _encode(_scramble(np.arange(n), 40, _salt(seed, 1)), 8, _BASE32))
    sentence_count = rng.integers(1, 12, n)
    sentences = [
        _nulls_where(_choice(rng, pa.array(_SENTENCES), n), sentence_count <= slot) for slot in range(11)
    ]
    description = pc.binary_join_element_wise(*sentences, " ", null_handling="skip")
    slug = pc.replace_substring_regex(pc.utf8_lower(title), r"[^a-z0-9]+", "-")
    base_price = np.array([row[2] for row in _SUB_CATEGORIES])[sub]
    price = (np.round(base_price * rng.lognormal(0, 0.35, n) / 100) * 100 - 1).clip(199).astype(np.int64)
    stock = np.where(rng.random(n) < 0.1, 0, rng.integers(1, 500, n))
    columns = {
        "product_id": product_id,
        "sku": sku,
        "name": name,
        "description": description,
        "brand": brand,
        "category": pa.array([row[0] for row in _SUB_CATEGORIES]).take(subs),
        "sub_category": pa.array([row[1] for row in _SUB_CATEGORIES]).take(subs),
        "price_cents": pa.array(price),
        "currency": _const("EUR", n),
        "url": _cat(_SITE, "/p/", slug, "-", pc.utf8_lower(product_id)),
        "image_url": _cat("https://cdn.example.com/img/", product_id, ".jpg"),
        "color": color,
        "season": _choice(rng, pa.array(_items(_SEASONS)), n),
        "in_stock": pa.array(stock > 0),
        "stock_units": pa.array(stock),
        "created_at": _timestamps(window.created(rng, anchor_us, 3 * YEAR_US)),
        **window.columns(),
    }
    clean = np.ones(n, dtype=bool)
    clean[np.concatenate([roles["negative_price"], roles["overlong_id"]])] = False
    catalog = _Catalog(
        product_id.filter(pa.array(clean)), columns["url"].filter(pa.array(clean)), price[clean]
    )

    def rewrite(column: str, idx: np.ndarray, values: list) -> None:
        columns[column] = _patch(columns[column], idx, values)

    def rows(column: str, idx: np.ndarray) -> list:
        return columns[column].take(pa.array(idx)).to_pylist()

    idx = roles["negative_price"]
    rewrite("price_cents", idx, [-p for p in rows("price_cents", idx)])
    idx = roles["overlong_name"]
    rewrite(
        "name",
        idx,
        [
            f"{v} | Limited Edition Gift Box with Free Engraving, Dust Bag and Care Kit - {d}"[:size]
            for v, d, size in zip(
                rows("name", idx), rows("description", idx), rng.integers(130, 260, len(idx)), strict=True
            )
        ],
    )
    idx = roles["overlong_id"]
    long_ids = [
        f"{p}-VARIANT-{s}-{c.upper().replace(' ', '-')}-XXL"
        for p, s, c in zip(rows("product_id", idx), rows("sku", idx), rows("color", idx), strict=True)
    ]
    rewrite("product_id", idx, long_ids)
    idx = roles["embedded_newline"]
    rewrite("description", idx, [f"{d}\nSize guide:\n- fits true to size" for d in rows("description", idx)])
    idx = roles["blank_required"]
    which = np.arange(len(idx)) % 2 == 0
    rewrite("description", idx[which], [_BLANKS[i % 2] for i in range(int(which.sum()))])
    rewrite("brand", idx[~which], [_BLANKS[i % 2] for i in range(int((~which).sum()))])
    dup = roles["duplicate_key"]
    columns = _append_duplicates(
        columns,
        dup,
        window.duplicate_updated,
        {
            "price_cents": pa.array(columns["price_cents"].take(pa.array(dup)).to_numpy() + 500),
            "stock_units": pa.array(rng.integers(0, 500, len(dup))),
        },
    )
    out.append("products", columns)
    keys = columns["product_id"]
    for defect, idx in roles.items():
        if defect != "deleted":
            kind = "overlong_field" if defect.startswith("overlong") else defect
            out.defects("products", keys.take(pa.array(idx)), kind)
    return catalog


def _coupon_sets(out: _Writer, seed: int, anchor_us: int) -> None:
    rng = _rng(seed, "coupon_sets")
    n = len(_COUPON_SETS)
    window = _Window.draw(rng, n, anchor_us, {})
    valid_from = (anchor_us // DAY_US - rng.integers(30, 400, n)) * DAY_US
    out.append(
        "coupon_sets",
        {
            "coupon_set_id": _numbered("CS", np.arange(1, n + 1), 3),
            "name": pa.array([row[1] for row in _COUPON_SETS]),
            "discount_type": pa.array([row[2] for row in _COUPON_SETS]),
            "discount_value": pa.array([row[3] for row in _COUPON_SETS]),
            "valid_from": _timestamps(valid_from),
            "valid_to": _timestamps(valid_from + rng.integers(60, 500, n) * DAY_US),
            **window.columns(),
        },
    )


def _orders_chunk(
    out: _Writer,
    seed: int,
    chunk: int,
    first_index: int,
    customers: _Customers,
    catalog: _Catalog,
    anchor_us: int,
) -> None:
    """Orders, their lines and the coupons (redeemed ones come from the orders)."""
    rng = _rng(seed, "orders", chunk)
    n = 2 * len(customers.ids)
    buyer = rng.integers(0, len(customers.ids), n)
    roles = _roles(rng, n, ORDER_DEFECTS, deleted=0.01)
    window = _Window.draw(rng, n, anchor_us, roles)
    age = rng.exponential(3 * DAY_US, n).astype(np.int64)
    ordered = np.minimum(np.maximum(window.updated - age, customers.created[buyer]), window.updated)
    ordered_at = ordered.copy()
    ordered_at[roles["future_order_date"]] = anchor_us + FUTURE_ORDER_DAYS * DAY_US
    order_id = _numbered("O", 2 * first_index + np.arange(1, n + 1), 7)
    currency = customers.currency.take(pa.array(buyer))
    fx = customers.fx_per_eur[buyer]

    lines = rng.integers(1, 5, n)
    line_order = np.repeat(np.arange(n), lines)
    starts = np.cumsum(lines) - lines
    product = catalog.pick(rng, len(line_order))
    quantity = rng.choice([1, 2, 3, 4], size=len(line_order), p=[0.72, 0.18, 0.07, 0.03])
    unit_price = np.round(catalog.price_cents[product] * fx[line_order]).astype(np.int64)
    subtotal = np.add.reduceat(quantity * unit_price, starts)

    set_index = rng.integers(0, len(_COUPON_SETS), n)
    discounted = rng.random(n) < 0.15
    percent = np.array([row[2] == "PERCENT" for row in _COUPON_SETS])[set_index]
    value = np.array([row[3] for row in _COUPON_SETS])[set_index]
    discount = np.where(
        percent, subtotal * value // 100, np.minimum(np.round(value * fx).astype(np.int64), subtotal)
    )
    discount = np.where(discounted, discount, 0)
    codes = _coupon_codes(seed, set_index, 3 * first_index + np.arange(n))
    status = _choice(rng, pa.array(_ORDER_STATUSES), n, np.array([0.10, 0.30, 0.10, 0.50]))
    idx = roles["lowercase_enum"]
    status = _patch(status, idx, [s.lower() for s in status.take(pa.array(idx)).to_pylist()])
    stamps = window.columns()
    out.append(
        "orders",
        {
            "order_id": order_id,
            "customer_id": pa.array(customers.ids[buyer]),
            "status": status,
            "currency": currency,
            "total_cents": pa.array(subtotal - discount),
            "discount_cents": pa.array(discount),
            "coupon_code": _nulls_where(codes, ~discounted),
            "ordered_at": _timestamps(ordered_at),
            "created_at": _timestamps(ordered),
            **stamps,
        },
    )
    for defect in ORDER_DEFECTS:
        out.defects("orders", order_id.take(pa.array(roles[defect])), defect)
    line_index = pa.array(line_order)
    out.append(
        "order_items",
        {
            "order_id": order_id.take(line_index),
            "line_no": pa.array(np.arange(len(line_order)) - starts[line_order] + 1),
            "product_id": catalog.ids.take(pa.array(product)),
            "quantity": pa.array(quantity),
            "unit_price_cents": pa.array(unit_price),
            "updated_at": stamps["updated_at"].take(line_index),
            "deleted_at": stamps["deleted_at"].take(line_index),
        },
    )
    redeemed = _Redeemed(
        codes=codes.filter(pa.array(discounted)),
        sets=set_index[discounted],
        customer_ids=customers.ids[buyer[discounted]],
        updated=window.updated[discounted],
        ordered=ordered[discounted],
        next_seq=3 * first_index + n,
    )
    _coupons_chunk(out, seed, rng, customers, anchor_us, redeemed)


def _coupon_codes(seed: int, sets: np.ndarray, seq: np.ndarray) -> pa.Array:
    """'SUMMER20-7KQ2M9XA3B': set prefix plus a scrambled sequence number (3 per customer reserved)."""
    prefixes = pa.array([row[0] for row in _COUPON_SETS]).take(pa.array(sets))
    return _cat(prefixes, "-", _encode(_scramble(seq, 50, _salt(seed, 2)), 10, _BASE32))


@dataclass
class _Redeemed:
    """Coupons used by a chunk's orders, and the first sequence number left for the other coupons."""

    codes: pa.Array
    sets: np.ndarray
    customer_ids: np.ndarray
    updated: np.ndarray
    ordered: np.ndarray
    next_seq: int


def _coupons_chunk(
    out: _Writer,
    seed: int,
    rng: np.random.Generator,
    customers: _Customers,
    anchor_us: int,
    redeemed: _Redeemed,
) -> None:
    """About one coupon per customer: the redeemed ones plus new and assigned codes."""
    count, used = len(customers.ids), len(redeemed.sets)
    extra = max(0, count - used)
    window = _Window.draw(rng, extra, anchor_us, {})
    window.deleted = rng.random(extra) < 0.005
    sets = rng.integers(0, len(_COUPON_SETS), extra)
    assigned = rng.random(extra) < 0.6
    owner = np.where(assigned, customers.ids[rng.integers(0, count, extra)], 0)
    codes = _coupon_codes(seed, sets, redeemed.next_seq + np.arange(extra))
    all_sets = np.concatenate([redeemed.sets, sets]) + 1
    updated = np.concatenate([redeemed.updated, window.updated])
    created = np.concatenate(
        [
            redeemed.ordered - rng.integers(0, 60 * DAY_US, used),
            window.created(rng, anchor_us, 180 * DAY_US),
        ]
    )
    deleted = np.concatenate([np.zeros(used, dtype=bool), window.deleted])
    out.append(
        "coupons",
        {
            "coupon_code": pa.concat_arrays([redeemed.codes, codes]),
            "coupon_set_id": _numbered("CS", all_sets, 3),
            "customer_id": pa.array(
                np.concatenate([redeemed.customer_ids, owner]),
                mask=np.concatenate([np.zeros(used, dtype=bool), ~assigned]),
            ),
            "status": pa.concat_arrays(
                [
                    _const("REDEEMED", used),
                    pc.if_else(pa.array(assigned), "ASSIGNED", "NEW"),
                ]
            ),
            "created_at": _timestamps(created),
            "updated_at": _timestamps(updated),
            "deleted_at": _timestamps(updated, ~deleted),
        },
    )


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """Random version-4 UUID strings."""
    nibbles = rng.integers(0, 16, (n, 32), dtype=np.uint8)
    nibbles[:, 12] = 4
    nibbles[:, 16] = 8 + (nibbles[:, 16] & 3)
    chars = _HEX[nibbles]
    dash = np.full((n, 1), ord("-"), dtype=np.uint8)
    groups = [chars[:, :8], chars[:, 8:12], chars[:, 12:16], chars[:, 16:20], chars[:, 20:]]
    return _fixed(np.hstack([part for group in groups for part in (dash, group)][1:]))


def _events_chunk(
    out: _Writer, seed: int, chunk: int, customers: _Customers, catalog: _Catalog, anchor_us: int
) -> None:
    """Web events; a session id groups a customer's events into one of four visits."""
    rng = _rng(seed, "events", chunk)
    n = 5 * len(customers.ids)
    who = rng.integers(0, len(customers.ids), n)
    kind = rng.choice(len(_EVENT_TYPES), size=n, p=[0.35, 0.25, 0.12, 0.05, 0.13, 0.10])
    window = _Window.draw(rng, n, anchor_us, {})
    window.deleted = rng.random(n) < 0.002
    # Events are loaded a few minutes after they happen; erased ones were updated days later.
    lag = np.where(window.deleted, rng.integers(0, 7 * DAY_US, n), rng.integers(0, 300_000_000, n))
    product = pa.array(catalog.pick(rng, n))
    with_product = (kind == 1) | (kind == 2)
    product_urls = catalog.urls.take(product)
    search = pc.replace_substring(_choice(rng, pa.array(_items(_SEARCH_TERMS)), n), " ", "+")
    url = pc.choose(
        pa.array(kind.astype(np.int8)),
        _cat(_SITE, _choice(rng, pa.array(_items(_PAGES)), n)),
        product_urls,
        product_urls,
        _const(f"{_SITE}/checkout", n),
        _const(f"{_SITE}/account/login", n),
        _cat(_SITE, "/search?q=", search),
    )
    session = customers.ids[who].astype(np.uint64) * np.uint64(4) + rng.integers(0, 4, n).astype(np.uint64)
    value = np.where(kind == 2, catalog.price_cents[product.to_numpy()], rng.integers(1000, 50_000, n))
    out.append(
        "events",
        {
            "event_id": _uuids(rng, n),
            "customer_id": pa.array(customers.ids[who]),
            "event_type": pa.array(_EVENT_TYPES).take(pa.array(kind)),
            "product_id": _nulls_where(catalog.ids.take(product), ~with_product),
            "url": url,
            "session_id": _encode(_scramble(session, 64, _salt(seed, 3)), 16, _HEX),
            "value_cents": pa.array(value, mask=(kind != 2) & (kind != 3)),
            "occurred_at": _timestamps(window.updated - lag),
            **window.columns(),
        },
    )


def _referrals_chunk(
    out: _Writer, seed: int, chunk: int, first_index: int, count: int, anchor_us: int
) -> None:
    """One contact per two customers; chunks are even-sized, so ids stay contiguous."""
    rng = _rng(seed, "referrals", chunk)
    n = count // 2
    if n == 0:
        return
    people = _people(rng, n)
    seq = first_index // 2 + np.arange(1, n + 1)
    referral_id = _numbered("R", seq, 8)
    roles = _roles(rng, n, REFERRAL_DEFECTS, deleted=0.01)
    window = _Window.draw(rng, n, anchor_us, roles)
    referrer_code = _cat("REF-", _encode(_scramble(seq, 40, _salt(seed, 4)), 8, _BASE32))
    sponsor = (rng.random(n) * np.arange(n)).astype(np.int64)
    columns = {
        "referral_id": referral_id,
        "email": _emails(rng, people, pc.cast(pa.array(seq), pa.string())),
        "first_name": people["first_name"],
        "last_name": people["last_name"],
        "phone": _nulls_where(people["phone"], rng.random(n) < 0.4),
        "language": people["language"],
        "referrer_code": referrer_code,
        "referred_by": _nulls_where(
            referrer_code.take(pa.array(sponsor)), (rng.random(n) >= 0.35) | (np.arange(n) == 0)
        ),
        "loyalty_card": _nulls_where(_render(rng, n, "29{d:11}"), rng.random(n) >= 0.3),
        "created_at": _timestamps(window.created(rng, anchor_us, 2 * YEAR_US)),
        **window.columns(),
    }

    def rows(column: str, idx: np.ndarray) -> list:
        return columns[column].take(pa.array(idx)).to_pylist()

    idx = roles["invalid_email"]
    columns["email"] = _patch(columns["email"], idx, _invalid_emails(rng, rows("email", idx)))
    idx = roles["missing_email"]
    columns["email"] = _patch(columns["email"], idx, [None] * len(idx))
    idx = roles["embedded_newline"]
    columns["last_name"] = _patch(columns["last_name"], idx, [f"{v}\n{v}" for v in rows("last_name", idx)])
    idx = roles["blank_name"]
    for column, part in (("first_name", idx[::2]), ("last_name", idx[1::2])):
        columns[column] = _patch(columns[column], part, [_BLANKS[i % 2] for i in range(len(part))])
    dup = roles["duplicate_key"]
    columns = _append_duplicates(
        columns,
        dup,
        window.duplicate_updated,
        {
            "phone": people["phone"].take(pa.array(rng.integers(0, n, len(dup)))),
            "loyalty_card": _render(rng, len(dup), "29{d:11}"),
        },
    )
    out.append("referral_contacts", columns)
    for defect, idx in roles.items():
        if defect != "deleted":
            out.defects("referral_contacts", referral_id.take(pa.array(idx)), defect)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def build_duckdb(
    path: str | Path,
    customers: int = 10_000,
    seed: int = 42,
    anchor: date = DEFAULT_ANCHOR,
    only: str | None = None,
) -> dict[str, int]:
    """Rebuild the DuckDB file from scratch and return the row count of each table."""
    if only not in (None, "customers"):
        raise ValueError(f"only must be None or 'customers', not {only!r}")
    if customers < 1:
        raise ValueError("customers must be positive")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)
    anchor_us = int(np.datetime64(anchor, "D").astype("datetime64[us]").astype(np.int64))
    tables = ["customers", "dq_injected_defects"] if only else list(TABLES)
    con = duckdb.connect(str(path))
    try:
        out = _Writer(con, tables)
        if only is None:
            _coupon_sets(out, seed, anchor_us)
            catalog = _products(out, seed, max(200, customers // 20), anchor_us)
        for chunk, first_index in enumerate(range(0, customers, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, customers - first_index)
            chunk_customers = _customer_chunk(out, seed, chunk, first_index + 1, count, anchor_us)
            if only is None:
                _orders_chunk(out, seed, chunk, first_index, chunk_customers, catalog, anchor_us)
                _events_chunk(out, seed, chunk, chunk_customers, catalog, anchor_us)
                _referrals_chunk(out, seed, chunk, first_index, count, anchor_us)
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}
    finally:
        con.close()


def load_postgres(
    duckdb_path: str | Path, dsn: str, schema: str = "public", batch_rows: int = 100_000
) -> dict[str, int]:
    """Copy every table of the DuckDB file into `schema` (dropped and recreated) with streamed COPY, then
    ANALYZE it."""
    src = duckdb.connect(str(duckdb_path), read_only=True)
    counts = {}
    try:
        tables = [
            row[0]
            for row in src.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        ]
        with psycopg.connect(dsn) as pg:
            pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for table in tables:
                target = sql.Identifier(schema, table)
                columns = src.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
                definition = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(
                        sql.Identifier(name),
                        sql.SQL(_PG_TYPES[kind] + ("" if nullable == "YES" else " NOT NULL")),
                    )
                    for name, kind, nullable in columns
                )
                pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
                pg.execute(sql.SQL("CREATE TABLE {} ({})").format(target, definition))
                counts[table] = 0
                copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(target)
                with pg.cursor() as cur, cur.copy(copy_sql) as copy:
                    for batch in src.sql(f"SELECT * FROM {table}").to_arrow_reader(batch_rows):
                        # Arrow's CSV writer quotes every string, so '' stays '' and NULL stays NULL.
                        buffer = io.BytesIO()
                        pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
                        copy.write(buffer.getbuffer())
                        counts[table] += batch.num_rows
                # Planner statistics now, as a warehouse has them: without them PostgreSQL picks nested
                # loops for the order/line joins and a window's extract takes tens of seconds.
                pg.execute(sql.SQL("ANALYZE {}").format(target))
    finally:
        src.close()
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox.warehouse", description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="data/warehouse.duckdb", help="DuckDB file to (re)build")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--anchor",
        type=date.fromisoformat,
        default=DEFAULT_ANCHOR,
        help="end of the 30-day updated_at window (midnight), YYYY-MM-DD",
    )
    parser.add_argument("--only", choices=["customers"], help="build only customers and dq_injected_defects")
    parser.add_argument(
        "--postgres", metavar="DSN", help="also copy the tables into this PostgreSQL database"
    )
    parser.add_argument("--schema", default="public", help="PostgreSQL schema for --postgres")
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild an existing file (the build always starts from scratch; kept for scripts)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    counts = build_duckdb(args.path, args.customers, args.seed, args.anchor, args.only)
    print(
        f"built {args.path} in {time.perf_counter() - started:.1f}s (seed {args.seed}, anchor {args.anchor})"
    )
    for table, count in counts.items():
        print(f"  {table:<20} {count:>12,}")
    if args.postgres:
        started = time.perf_counter()
        load_postgres(args.path, args.postgres, args.schema)
        elapsed = time.perf_counter() - started
        print(f"copied {len(counts)} tables to PostgreSQL schema {args.schema} in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
