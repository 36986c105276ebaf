"""Seed the four purposes and version "1" of each purpose's notice, in Bahasa Indonesia and English.

The notices take effect on 17 October 2024, the day UU PDP No. 27/2022 became
fully enforceable. Later versions are published in the admin.
"""

from datetime import datetime, timedelta, timezone

from django.db import migrations

EFFECTIVE = datetime(2024, 10, 17, tzinfo=timezone(timedelta(hours=7)))

PURPOSES = [
    {
        "key": "personalization",
        "name": "Personalized recommendations",
        "description": "Using the subject's browsing and purchase history to recommend products.",
        "retention_days": 365,
        "consent_validity_days": 365,
        "sensitive": False,
        "involves_profiling": True,
        "texts": {
            "id": (
                "Rekomendasi yang dipersonalisasi",
                "Dengan persetujuan Anda, kami menggunakan riwayat penelusuran dan pembelian Anda di "
                "marketplace untuk merekomendasikan produk yang relevan bagi Anda. Data ini disimpan "
                "paling lama 365 hari dan persetujuan berlaku 365 hari. Anda dapat menarik persetujuan "
                "kapan saja melalui halaman Pengaturan Privasi; penarikan berlaku sejak permintaan "
                "berikutnya. Anda juga berhak mengakses, menghapus, membatasi pemrosesan, dan mengajukan "
                "keberatan atas pemrofilan (UU No. 27 Tahun 2022 tentang Pelindungan Data Pribadi).",
            ),
            "en": (
                "Personalized recommendations",
                "With your consent we use your browsing and purchase history on the marketplace to "
                "recommend products relevant to you. This data is kept for at most 365 days and your "
                "consent lasts 365 days. You can withdraw it at any time in Privacy Settings; the "
                "withdrawal applies from your next request. You also have the right to access and erase "
                "your data, to restrict its processing and to object to profiling (Indonesian Law No. 27 "
                "of 2022 on Personal Data Protection).",
            ),
        },
    },
    {
        "key": "sensitive_profiling",
        "name": "Sensitive-category profiling",
        "description": "Recommending financial products and health items from the subject's interests: "
        "specific personal data under UU PDP Art. 4(2).",
        "retention_days": 90,
        "consent_validity_days": 180,
        "sensitive": True,
        "involves_profiling": True,
        "texts": {
            "id": (
                "Rekomendasi kategori sensitif (keuangan dan kesehatan)",
                "Data kesehatan dan data keuangan pribadi termasuk data pribadi yang bersifat spesifik "
                "(Pasal 4 ayat (2) UU PDP). Hanya dengan persetujuan eksplisit Anda yang terpisah, kami "
                "menggunakan minat Anda pada produk keuangan dan kesehatan untuk rekomendasi. Data ini "
                "disimpan paling lama 90 hari dan persetujuan berlaku 180 hari. Menolak tidak mengurangi "
                "layanan lain; Anda dapat menarik persetujuan kapan saja.",
            ),
            "en": (
                "Sensitive-category recommendations (finance and health)",
                "Health data and personal financial data are specific personal data (Art. 4(2) of the "
                "PDP Law). Only with your separate, explicit consent do we use your interest in financial "
                "and health products for recommendations. This data is kept for at most 90 days and your "
                "consent lasts 180 days. Declining does not affect any other service; you can withdraw at "
                "any time.",
            ),
        },
    },
    {
        "key": "behavioral_tracking",
        "name": "Behavioural tracking",
        "description": "Recording product views and clicks to measure and improve the marketplace.",
        "retention_days": 180,
        "consent_validity_days": 365,
        "sensitive": False,
        "involves_profiling": True,
        "texts": {
            "id": (
                "Pelacakan perilaku",
                "Dengan persetujuan Anda, kami mencatat produk yang Anda lihat dan klik untuk mengukur "
                "dan meningkatkan marketplace. Catatan ini disimpan paling lama 180 hari dengan "
                "pseudonim, tanpa nama, email, atau nomor telepon. Anda dapat menarik persetujuan kapan "
                "saja.",
            ),
            "en": (
                "Behavioural tracking",
                "With your consent we record the products you view and click to measure and improve the "
                "marketplace. These records are kept for at most 180 days under a pseudonym, without your "
                "name, email or phone number. You can withdraw at any time.",
            ),
        },
    },
    {
        "key": "marketing",
        "name": "Marketing messages",
        "description": "Promotional messages about offers and campaigns.",
        "retention_days": 730,
        "consent_validity_days": 730,
        "sensitive": False,
        "involves_profiling": False,
        "texts": {
            "id": (
                "Pesan pemasaran",
                "Dengan persetujuan Anda, kami mengirimkan informasi promo dan kampanye. Data untuk "
                "keperluan ini disimpan paling lama 730 hari. Anda dapat berhenti berlangganan dan "
                "menarik persetujuan kapan saja.",
            ),
            "en": (
                "Marketing messages",
                "With your consent we send you offers and campaign news. Data for this purpose is kept "
                "for at most 730 days. You can unsubscribe and withdraw your consent at any time.",
            ),
        },
    },
]


def seed(apps, schema_editor):
    Purpose = apps.get_model("consent", "Purpose")
    Notice = apps.get_model("consent", "Notice")
    NoticeText = apps.get_model("consent", "NoticeText")
    for spec in PURPOSES:
        texts = spec["texts"]
        fields = {k: v for k, v in spec.items() if k not in ("key", "texts")}
        purpose, _ = Purpose.objects.get_or_create(key=spec["key"], defaults=fields)
        notice, _ = Notice.objects.get_or_create(
            purpose=purpose, version="1", defaults={"effective_at": EFFECTIVE, "requires_reconsent": False}
        )
        for language, (title, body) in texts.items():
            NoticeText.objects.get_or_create(
                notice=notice, language=language, defaults={"title": title, "body": body}
            )


class Migration(migrations.Migration):
    dependencies = [("consent", "0002_ledger_purposes_requests")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
