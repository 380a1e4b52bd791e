import pytest

from notes.models import Note, Tag


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def make_note():
    def make(owner, title, body="", pinned=False, tags=()):
        note = Note.objects.create(owner=owner, title=title, body=body, pinned=pinned)
        for name in tags:
            note.tags.add(Tag.objects.get_or_create(name=name)[0])
        return note

    return make
