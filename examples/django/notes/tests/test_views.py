import json

import pytest
from django.urls import reverse

from notes.models import Note

pytestmark = pytest.mark.django_db


def test_login_is_required(client):
    response = client.get(reverse("notes:list"))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_list_shows_only_own_notes(alice_client, alice, bob, make_note):
    make_note(alice, "mine", body="hello")
    make_note(bob, "not mine")
    response = alice_client.get(reverse("notes:list"))
    assert response.status_code == 200
    assert [n["title"] for n in response.json()["notes"]] == ["mine"]


def test_create_note(alice_client, alice):
    payload = {"title": " Shopping ", "body": "milk\neggs", "tags": ["home"]}
    response = alice_client.post(reverse("notes:list"), json.dumps(payload),
                                 content_type="application/json")
    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Shopping"
    assert body["summary"] == "milk"
    assert body["tags"] == ["home"]
    assert Note.objects.get(pk=body["id"]).owner == alice


@pytest.mark.parametrize("payload", ["not json", "{}", '{"title": "   "}'])
def test_create_rejects_bad_input(alice_client, payload):
    response = alice_client.post(reverse("notes:list"), payload,
                                 content_type="application/json")
    assert response.status_code == 400
    assert Note.objects.count() == 0


def test_detail_of_another_users_note_is_404(alice_client, bob, make_note):
    note = make_note(bob, "secret")
    response = alice_client.get(reverse("notes:detail", args=[note.pk]))
    assert response.status_code == 404


def test_filter_by_tag(alice_client, alice, make_note):
    make_note(alice, "a", tags=["work"])
    make_note(alice, "b", tags=["home"])
    response = alice_client.get(reverse("notes:list"), {"tag": "home"})
    assert [n["title"] for n in response.json()["notes"]] == ["b"]


@pytest.mark.django_db(transaction=True)
def test_transactional_test_sees_committed_rows(alice, make_note):
    from django.db import transaction

    with transaction.atomic():
        make_note(alice, "committed")
    assert Note.objects.filter(title="committed").exists()
