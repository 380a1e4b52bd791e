import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from notes.models import Note, Tag


def test_summary_is_the_first_line():
    note = Note(title="t", body="  first line\nsecond line\n")
    assert note.summary == "first line"


def test_summary_is_truncated():
    note = Note(title="t", body="x" * 60)
    assert note.summary == "x" * 39 + "\u2026"
    assert Note(title="t", body="").summary == ""


@pytest.mark.django_db
def test_pinned_notes_come_first(alice, make_note):
    make_note(alice, "old")
    make_note(alice, "pinned", pinned=True)
    make_note(alice, "new")
    assert [n.title for n in Note.objects.all()] == ["pinned", "new", "old"]


@pytest.mark.django_db
def test_tags_are_shared(alice, bob, make_note):
    make_note(alice, "a", tags=["work", "urgent"])
    make_note(bob, "b", tags=["work"])
    assert Tag.objects.count() == 2
    assert Tag.objects.get(name="work").notes.count() == 2


@pytest.mark.django_db
def test_both_migrations_are_applied():
    applied = MigrationRecorder(connection).applied_migrations()
    assert ("notes", "0001_initial") in applied
    assert ("notes", "0002_note_pinned") in applied
    with connection.cursor() as cursor:
        columns = [c.name for c in connection.introspection.get_table_description(
            cursor, Note._meta.db_table)]
    assert "pinned" in columns


@pytest.mark.django_db
def test_each_test_starts_with_an_empty_table(alice, make_note):
    assert Note.objects.count() == 0
    make_note(alice, "only")
    assert Note.objects.count() == 1
