"""Chinese names sort by pinyin (khhf.names), as a phone book does."""

from types import SimpleNamespace

from khhf.names import by_manager_name, by_pinyin, pinyin_key


def test_names_sort_by_pinyin_not_by_code_point():
    names = ["张伟", "王芳", "李娜", "赵县长", "孙经理", "钱主任", "刘洋", "陈静"]
    assert sorted(names) != by_pinyin(names, str)  # code points put 刘 after 张
    assert by_pinyin(names, str) == ["陈静", "李娜", "刘洋", "钱主任", "孙经理", "王芳",
                                     "张伟", "赵县长"]


def test_syllable_by_syllable_then_tone():
    # li3 before lin2: the shorter syllable first; ma1 before ma3
    assert by_pinyin(["林峰", "李峰"], str) == ["李峰", "林峰"]
    assert by_pinyin(["马丽", "妈丽"], str) == ["妈丽", "马丽"]


def test_readings_follow_the_phrase():
    # 长 reads zhang3 in 县长 and chang2 in 长城: the dictionary knows phrases
    assert pinyin_key("县长")[0] == ("xian4", "zhang3")
    assert pinyin_key("长城")[0] == ("chang2", "cheng2")


def test_latin_names_and_blanks_mix_in():
    assert by_pinyin(["Zoe", "安娜", "", None, "bob"], lambda n: n) == \
        ["", None, "安娜", "bob", "Zoe"]


def test_managers_active_first_then_by_name():
    def m(name, status="active"):
        return SimpleNamespace(user=SimpleNamespace(display_name=name), status=status)
    managers = [m("张伟"), m("李娜", "departed"), m("王芳"), m("艾米", "departed")]
    assert [x.user.display_name for x in by_manager_name(managers)] == \
        ["王芳", "张伟", "艾米", "李娜"]
